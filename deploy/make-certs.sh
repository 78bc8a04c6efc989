#!/usr/bin/env bash
# Make a CA and the certificates of a kvraft cluster with the openssl command; revoke them.
#
#   deploy/make-certs.sh [-o DIR] [-d DAYS] [-c CLIENT]... NAME=ADDR[,ADDR...] ...
#   deploy/make-certs.sh [-o DIR] [-d DAYS] -r NAME ...      revoke NAME's certificates
#   deploy/make-certs.sh [-o DIR] [-d DAYS] -l               only write DIR/ca.crl again
#
# NAME=ADDR: one member (a machine); ADDR is an IP address or a DNS name, several separated
# by commas (IPv4, IPv6, or a DNS name, '*.' for a wildcard). Each member gets
#   NAME.crt/NAME.key            client URLs (--cert-file/--key-file; serverAuth+clientAuth)
#   NAME-peer.crt/NAME-peer.key  peer URLs (--peer-cert-file/--peer-key-file)
# with subjectAltNames: the member's addresses, its name, localhost and 127.0.0.1.
# -c CLIENT (repeatable; default "client"): a client certificate CLIENT.crt/CLIENT.key
# (clientAuth, CN=CLIENT) for kvctl, jobctl, the scheduler and the agents.
# The CA (ca.crt, ca.key) is made once and reused when DIR has it (half of it is refused), so
# running the script again with a new NAME=ADDR adds a machine to a cluster. Existing leaf
# certificates are kept; delete them to reissue. Keys are written mode 0600.
# Every run writes DIR/ca.crl, the CA's certificate revocation list (empty until something is
# revoked; valid DAYS), for the members' --client-crl-file and --peer-crl-file. -r NAME
# (repeatable) revokes NAME.crt and NAME-peer.crt (those that exist); copy ca.crl to every
# member afterwards: new connections are checked against it without a restart. Revoking
# again is harmless; naming NAME=ADDR or -c NAME later issues NAME a new certificate. The
# CA's list of what it revoked is DIR/ca.index (keep it with ca.key). -l renews ca.crl
# before its next update passes (the members refuse every certificate after that).
#
# Example, three machines:
#   deploy/make-certs.sh -o /etc/kvraft/pki -c scheduler -c agent -c admin \
#       m1=10.0.0.11,m1.example.net m2=10.0.0.12 m3=10.0.0.13
#   deploy/make-certs.sh -o /etc/kvraft/pki -r m3      # m3 was lost: cut it off
set -euo pipefail

usage() { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

out=pki
days=825
clients=()
revokes=()
crl_only=false
while getopts "o:d:c:r:lh" opt; do
  case "$opt" in
    o) out=$OPTARG ;;
    d) days=$OPTARG ;;
    c) clients+=("$OPTARG") ;;
    r) revokes+=("$OPTARG") ;;
    l) crl_only=true ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
if $crl_only; then
  [ $# -eq 0 ] && [ ${#clients[@]} -eq 0 ] && [ ${#revokes[@]} -eq 0 ] \
    || { echo "make-certs: -l takes no NAME=ADDR, -c or -r" >&2; exit 2; }
elif [ $# -eq 0 ] && [ ${#clients[@]} -eq 0 ] && [ ${#revokes[@]} -eq 0 ]; then
  echo "make-certs: at least one NAME=ADDR member (or -c CLIENT, -r NAME, -l) is needed" >&2; usage
fi
[ ${#clients[@]} -gt 0 ] || [ $# -eq 0 ] || clients=(client)
command -v openssl >/dev/null || { echo "make-certs: the openssl command is not installed" >&2; exit 1; }
case "$days" in ''|*[!0-9]*) echo "make-certs: -d wants a number of days, not '$days'" >&2; exit 2 ;; esac
if [ ${#days} -gt 5 ] || [ $((10#$days)) -lt 1 ] || [ $((10#$days)) -gt 36500 ]; then
  echo "make-certs: -d wants 1 to 36500 days, not $days" >&2; exit 2
fi

# 'ca' (in any case: a case-insensitive file system) is the CA's own ca.crt and ca.key
name_ok() { [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ && "${1,,}" != ca ]]; }
ip_like() { [[ "$1" =~ ^[0-9.]+$ || "$1" == *:* ]]; }

# an address of a certificate: an IPv4 or IPv6 address, or a DNS name (a leading '*.' for a wildcard)
ipv4_ok() {
  [[ "$1" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || return 1
  local o; local -a octets
  IFS=. read -r -a octets <<<"$1"
  for o in "${octets[@]}"; do [ $((10#$o)) -le 255 ] || return 1; done
}
label='[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?'
addr_ok() {
  if ip_like "$1"; then
    ipv4_ok "$1" || [[ "$1" =~ ^[0-9A-Fa-f:.]+$ && "$1" == *:*:* ]]
  else
    [[ ${#1} -le 253 && "$1" =~ ^(\*\.)?($label\.)*$label$ ]]
  fi
}

for arg in "$@"; do
  name=${arg%%=*}; addrs=${arg#*=}
  if [ "$name" = "$arg" ] || [ -z "$addrs" ] || ! name_ok "$name"; then
    echo "make-certs: '$arg' is not NAME=ADDR[,ADDR...] (NAME not 'ca')" >&2; exit 2
  fi
  IFS=',' read -r -a list <<<"$addrs,"
  for a in "${list[@]}"; do
    addr_ok "$a" || { echo "make-certs: '$a' in '$arg' is neither an IP address nor a DNS name" >&2; exit 2; }
  done
done
for c in ${clients[@]+"${clients[@]}"}; do
  name_ok "$c" || { echo "make-certs: '$c' is not a usable client name (letters, digits, '._-'; not 'ca')" >&2; exit 2; }
done
for r in ${revokes[@]+"${revokes[@]}"}; do
  name_ok "$r" || { echo "make-certs: '$r' is not a certificate name to revoke" >&2; exit 2; }
done

# half a CA (ca.crt copied without its key, or the reverse) is never replaced: the certificates
# it issued would no longer verify against a new ca.crt
for pair in "ca.crt ca.key" "ca.key ca.crt"; do
  have=${pair% *}; lack=${pair#* }
  if [ -f "$out/$have" ] && [ ! -f "$out/$lack" ]; then
    echo "make-certs: $out has $have but no $lack: put the CA's $lack back (a new CA would orphan every certificate it issued), or use an empty -o DIR" >&2
    exit 1
  fi
done

mkdir -p "$out"
umask 077
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

if [ ! -f "$out/ca.crt" ] || [ ! -f "$out/ca.key" ]; then
  if [ $# -eq 0 ] && [ ${#clients[@]} -eq 0 ]; then
    echo "make-certs: no CA in $out (ca.crt, ca.key): -r and -l work on an existing one" >&2; exit 1
  fi
  openssl req -x509 "${ec[@]}" -keyout "$out/ca.key" -out "$out/ca.crt" -days "$days" \
    -subj "/O=kvraft/CN=kvraft CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "made CA $out/ca.crt"
else
  echo "reusing CA $out/ca.crt"
fi

# The CA's state for `openssl ca` (revocations and the CRL): what it revoked, the CRL number.
[ -f "$out/ca.index" ] || : >"$out/ca.index"
[ -f "$out/ca.crlnumber" ] || echo 1000 >"$out/ca.crlnumber"
ca_conf=$(mktemp)
trap 'rm -f "$ca_conf"' EXIT
cat >"$ca_conf" <<'EOF'
[ ca ]
default_ca = kvraft_ca
[ kvraft_ca ]
database = $ENV::MAKE_CERTS_DIR/ca.index
crlnumber = $ENV::MAKE_CERTS_DIR/ca.crlnumber
certificate = $ENV::MAKE_CERTS_DIR/ca.crt
private_key = $ENV::MAKE_CERTS_DIR/ca.key
default_md = sha256
unique_subject = no
crl_extensions = crl_ext
[ crl_ext ]
# which CA key signed it: CAs with the same name (an old and a new one) each find their CRL
authorityKeyIdentifier = keyid:always
EOF
export MAKE_CERTS_DIR=$out

serial_of() { openssl x509 -in "$1" -noout -serial | sed 's/^serial=0*//'; }

# revoked CERT: whether the CA's index has CERT's serial as revoked
revoked() {
  local serial
  serial=$(serial_of "$1")
  awk -F'\t' -v s="$serial" '$1 == "R" { x = toupper($4); sub(/^0+/, "", x); if (x == toupper(s)) found = 1 }
    END { exit !found }' "$out/ca.index"
}

# revoke BASENAME: put BASENAME.crt on the CA's list of revoked certificates
revoke() {
  local crt=$out/$1.crt err
  if revoked "$crt"; then
    echo "already revoked $crt (serial $(serial_of "$crt"))"; return
  fi
  if ! err=$(openssl ca -config "$ca_conf" -revoke "$crt" 2>&1); then
    echo "make-certs: openssl could not revoke $crt: $err" >&2; exit 1
  fi
  echo "revoked $crt (serial $(serial_of "$crt"))"
}

for r in ${revokes[@]+"${revokes[@]}"}; do
  found=false
  for base in "$r" "$r-peer"; do
    if [ -f "$out/$base.crt" ]; then revoke "$base"; found=true; fi
  done
  $found || { echo "make-certs: no certificate $out/$r.crt or $out/$r-peer.crt to revoke" >&2; exit 1; }
done

# sign BASENAME CN USAGE SAN: BASENAME.key/.crt signed by the CA (kept when present, unless revoked)
sign() {
  local base=$1 cn=$2 usage=$3 san=$4
  if [ -f "$out/$base.crt" ] && [ -f "$out/$base.key" ]; then
    if ! revoked "$out/$base.crt"; then
      echo "keeping $out/$base.crt"; return
    fi
    echo "reissuing $out/$base.crt (the one there is revoked)"
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
for c in ${clients[@]+"${clients[@]}"}; do
  sign "$c" "$c" "clientAuth" ""
done
chmod 644 "$out/ca.crt"

if ! err=$(openssl ca -config "$ca_conf" -gencrl -crldays "$days" -out "$out/ca.crl.tmp" 2>&1); then
  echo "make-certs: openssl could not write the CRL: $err" >&2; exit 1
fi
chmod 644 "$out/ca.crl.tmp"
mv "$out/ca.crl.tmp" "$out/ca.crl"
echo "wrote $out/ca.crl ($(grep -c '^R' "$out/ca.index" || true) revoked, next update in $days days)"
echo "done: $out (keep ca.key and ca.index offline; copy ca.crt, ca.crl and each machine's own files to it)"
