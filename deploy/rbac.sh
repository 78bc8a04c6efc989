#!/usr/bin/env bash
# Least-privilege users and roles for a kvraft deployment with auth on (docs/deploy.md,
# "Auth: who may write what"; the prefixes are docs/keyspace.md's).
#
# Run once as root, before or after `kvctl auth enable`:
#   ETCDCTL_ENDPOINTS=https://10.0.0.1:2379 KVCTL_FLAGS="--user root:... --cacert ..." \
#   SCHEDULER_PASSWORD=... AGENT_PASSWORD=... deploy/rbac.sh
#
# It makes five roles and two users (three with MONITORING_PASSWORD):
#   kvraft-scheduler (user kvraft-scheduler): reads all of /registry/; writes what the
#     scheduler writes (bindings, allocations, assignments, task statuses it sets, job
#     status and events, its election key), /registry/jobs/ (cancelled jobs it collects) and
#     /registry/evictions/ (it deletes each eviction request once acted on), and
#     /accounting/ (a record per run that ends; months past retention deleted).
#   kvraft-agent (user kvraft-agent, for every agent): writes node records, node leases and
#     task statuses; reads assignments, bindings and jobs (the rank environment); writes
#     /jobs/, where the ranks it starts keep their launch rendezvous, progress and checkpoints
#     (each attempt gets a token scoped to its own job's /jobs/<job>/ from the agent: the
#     ranks never act with the agent's identity; docs/design/auth.md, "Scoped tokens").
#   With AGENT_NODES="gpu-1 gpu-2 ..." each node gets a user and role of its own instead
#     (kvraft-agent-<node>, password AGENT_PASSWORD_<node, other than [A-Za-z0-9_] as _>, or
#     AGENT_PASSWORD): it writes only its own node record and lease, and reads only its own
#     assignments, so a compromised machine cannot pose as another or see its tasks.
#   kvraft-submitter (give it to each person who submits jobs: `kvctl user add alice`,
#     `kvctl user grant-role alice kvraft-submitter`): reads /registry/ (get, describe, top)
#     and /accounting/ (`jobctl report`: every tenant's usage, as Slurm's sreport shows it), and
#     writes job specs and eviction requests (`jobctl cancel`, `jobctl requeue`), nothing
#     else. Tenants and priority classes stay root's.
#   kvraft-operator (give it to the people who maintain the machines): as kvraft-submitter,
#     and writes cordons: `jobctl cordon`, `uncordon`, `drain [--cancel|--requeue]`.
#   With TENANTS="nlp vision=cv-" each tenant gets a role of its own,
#     kvraft-submitter-<tenant>: as kvraft-submitter, but it writes only the jobs (and the
#     eviction requests) whose names start with the tenant's prefix (default "<tenant>-"), so
#     its people can neither submit under another tenant's quota nor cancel or requeue
#     another tenant's jobs. Give the tenant the same
#     prefix (`job_name_prefix: nlp-` in `jobctl apply`): the scheduler and jobctl then hold
#     every job to its name (docs/jobs.md, "Tenant admission").
#   kvraft-monitoring (no permissions: holding it is what members started with --metrics-auth
#     ask of a /metrics scrape; docs/deploy.md, "Firewall"). With MONITORING_PASSWORD, a user
#     kvraft-monitoring holding it, for Prometheus' basic_auth.
# A submitter cannot write assignments: what an agent runs comes only from the scheduler.
# Idempotent: existing roles and users are kept (their permissions are granted again).
set -euo pipefail
set -f  # AGENT_NODES and TENANTS are names, never file patterns
KVCTL=${KVCTL:-kvctl}

# every name checked before anything is granted
for node in ${AGENT_NODES:-}; do
  case "$node" in */*|.|..) echo "rbac.sh: bad node name in AGENT_NODES: $node" >&2; exit 2 ;; esac
done
for entry in ${TENANTS:-}; do
  tenant=${entry%%=*}
  case "$entry" in *=) echo "rbac.sh: empty job name prefix for tenant $tenant" >&2; exit 2 ;; esac
  case "$tenant" in */*|""|.|..) echo "rbac.sh: bad tenant entry in TENANTS: $entry" >&2; exit 2 ;; esac
  case "${entry#*=}" in */*) echo "rbac.sh: bad tenant entry in TENANTS: $entry" >&2; exit 2 ;; esac
done
read -r -a FLAGS <<< "${KVCTL_FLAGS:-}"

kv() { "$KVCTL" "${FLAGS[@]}" "$@" >/dev/null; }
quietly() { "$KVCTL" "${FLAGS[@]}" "$@" >/dev/null 2>&1 || true; }  # "already exists" is fine

role() {  # role NAME PERM PREFIX [PERM PREFIX ...]
  local name=$1
  shift
  quietly role add "$name"
  while [ $# -gt 0 ]; do
    kv role grant-permission --prefix "$name" "$1" "$2"
    shift 2
  done
}

user() {  # user NAME PASSWORD ROLE
  if [ -z "$2" ]; then echo "rbac.sh: no password for user $1" >&2; exit 2; fi
  quietly user add "$1:$2"
  kv user grant-role "$1" "$3"
}

role kvraft-scheduler \
  read /registry/ \
  readwrite /registry/bindings/ readwrite /registry/alloc/ readwrite /registry/assignments/ \
  readwrite /registry/tasks/ readwrite /registry/jobstatus/ readwrite /registry/events/ \
  readwrite /registry/scheduler/leader/ readwrite /registry/jobs/ readwrite /registry/evictions/ \
  readwrite /accounting/
role kvraft-agent \
  readwrite /registry/nodes/ readwrite /registry/leases/ readwrite /registry/tasks/ \
  read /registry/assignments/ read /registry/bindings/ read /registry/jobs/ \
  readwrite /jobs/
for node in ${AGENT_NODES:-}; do
  # the record and the lease key exactly (no --prefix: gpu-1 must not cover gpu-10)
  quietly role add "kvraft-agent-$node"
  kv role grant-permission "kvraft-agent-$node" readwrite "/registry/nodes/$node"
  kv role grant-permission "kvraft-agent-$node" readwrite "/registry/leases/$node"
  role "kvraft-agent-$node" \
    read "/registry/assignments/$node/" readwrite /registry/tasks/ \
    read /registry/bindings/ read /registry/jobs/ readwrite /jobs/
done
role kvraft-submitter \
  read /registry/ readwrite /registry/jobs/ readwrite /registry/evictions/ read /accounting/
role kvraft-operator \
  read /registry/ readwrite /registry/jobs/ readwrite /registry/evictions/ readwrite /registry/cordons/ \
  read /accounting/
for entry in ${TENANTS:-}; do
  tenant=${entry%%=*}
  prefix=${entry#*=}
  if [ "$entry" = "$tenant" ]; then prefix="$tenant-"; fi
  role "kvraft-submitter-$tenant" \
    read /registry/ readwrite "/registry/jobs/$prefix" readwrite "/registry/evictions/$prefix" read /accounting/
done

role kvraft-monitoring

user kvraft-scheduler "${SCHEDULER_PASSWORD:-}" kvraft-scheduler
if [ -n "${MONITORING_PASSWORD:-}" ]; then
  user kvraft-monitoring "$MONITORING_PASSWORD" kvraft-monitoring
fi
if [ -z "${AGENT_NODES:-}" ]; then
  user kvraft-agent "${AGENT_PASSWORD:-}" kvraft-agent
fi
for node in ${AGENT_NODES:-}; do
  var="AGENT_PASSWORD_${node//[^A-Za-z0-9_]/_}"
  user "kvraft-agent-$node" "${!var:-${AGENT_PASSWORD:-}}" "kvraft-agent-$node"
done
echo "rbac.sh: roles kvraft-scheduler, kvraft-agent${AGENT_NODES:+ (and one per node)}, kvraft-submitter${TENANTS:+ (and one per tenant)}, kvraft-operator, kvraft-monitoring"
