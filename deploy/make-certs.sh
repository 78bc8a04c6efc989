#!/usr/bin/env bash
# Make a CA and the certificates of a kvraft cluster with the openssl command.
#
#   deploy/make-certs.sh [-o DIR] [-d DAYS] [-c CLIENT]... NAME=ADDR[,ADDR...] ...
#
# NAME=ADDR: one member (a machine); ADDR is an IP address or a DNS name, several separated
# by commas. Each member gets
#   NAME.crt/NAME.key            client URLs (--cert-file/--key-file; serverAuth+clientAuth)
#   NAME-peer.crt/NAME-peer.key  peer URLs (--peer-cert-file/--peer-key-file)
# with subjectAltNames: the member's addresses, its name, localhost and 127.0.0.1.
# -c CLIENT (repeatable; default "client"): a client certificate CLIENT.crt/CLIENT.key
# (clientAuth, CN=CLIENT) for kvctl, jobctl, the scheduler and the agents.
# The CA (ca.crt, ca.key) is made once and reused when DIR already has it, so running the
# script again with a new NAME=ADDR adds a machine to an existing cluster. Existing leaf
# certificates are kept; delete them to reissue. Keys are written mode 0600.
#
# Example, three machines:
#   deploy/make-certs.sh -o /etc/kvraft/pki -c scheduler -c agent -c admin \
#       m1=10.0.0.11,m1.example.net m2=10.0.0.12 m3=10.0.0.13
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

out=pki
days=825
clients=()
while getopts "o:d:c:h" opt; do
  case "$opt" in
    o) out=$OPTARG ;;
    d) days=$OPTARG ;;
    c) clients+=("$OPTARG") ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "make-certs: at least one NAME=ADDR member is needed" >&2; usage; }
[ ${#clients[@]} -gt 0 ] || clients=(client)
command -v openssl >/dev/null || { echo "make-certs: the openssl command is not installed" >&2; exit 1; }
case "$days" in ''|*[!0-9]*) echo "make-certs: -d wants a number of days, not '$days'" >&2; exit 2 ;; esac

name_ok() { [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]]; }
ip_like() { [[ "$1" =~ ^[0-9.]+$ || "$1" == *:* ]]; }

for arg in "$@"; do
  name=${arg%%=*}; addrs=${arg#*=}
  if [ "$name" = "$arg" ] || [ -z "$addrs" ] || ! name_ok "$name"; then
    echo "make-certs: '$arg' is not NAME=ADDR[,ADDR...]" >&2; exit 2
  fi
done
for c in "${clients[@]}"; do
  name_ok "$c" || { echo "make-certs: '$c' is not a usable client name" >&2; exit 2; }
done

mkdir -p "$out"
umask 077
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

if [ ! -f "$out/ca.crt" ] || [ ! -f "$out/ca.key" ]; then
  openssl req -x509 "${ec[@]}" -keyout "$out/ca.key" -out "$out/ca.crt" -days "$days" \
    -subj "/O=kvraft/CN=kvraft CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "made CA $out/ca.crt"
else
  echo "reusing CA $out/ca.crt"
fi

# sign BASENAME CN USAGE SAN: BASENAME.key/.crt signed by the CA (kept when present)
sign() {
  local base=$1 cn=$2 usage=$3 san=$4
  if [ -f "$out/$base.crt" ] && [ -f "$out/$base.key" ]; then
    echo "keeping $out/$base.crt"; return
  fi
  local ext
  ext=$(mktemp)
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [ -z "$san" ] || echo "subjectAltName=$san"
  } >"$ext"
  openssl req "${ec[@]}" -keyout "$out/$base.key" -out "$out/$base.csr" -subj "/O=kvraft/CN=$cn" 2>/dev/null
  openssl x509 -req -in "$out/$base.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
    -out "$out/$base.crt" -days "$days" -extfile "$ext" 2>/dev/null
  rm -f "$out/$base.csr" "$ext"
  chmod 600 "$out/$base.key"
  chmod 644 "$out/$base.crt"
  echo "made $out/$base.crt (CN=$cn${san:+, $san})"
}

for arg in "$@"; do
  name=${arg%%=*}; addrs=${arg#*=}
  san="DNS:$name,DNS:localhost,IP:127.0.0.1"
  IFS=',' read -r -a list <<<"$addrs"
  for a in "${list[@]}"; do
    case "$a" in ''|localhost|127.0.0.1|"$name") continue ;; esac
    if ip_like "$a"; then san="$san,IP:$a"; else san="$san,DNS:$a"; fi
  done
  sign "$name" "$name" "serverAuth,clientAuth" "$san"
  sign "$name-peer" "$name" "serverAuth,clientAuth" "$san"
done
for c in "${clients[@]}"; do
  sign "$c" "$c" "clientAuth" ""
done
chmod 644 "$out/ca.crt"
echo "done: $out (keep ca.key offline; copy ca.crt and each machine's own files to it)"
