#!/bin/sh
# Starts redis-server (docker-compose.yml's redis service runs this) with an
# ACL user per role, their passwords taken from the environment: none is on
# a command line or in a file of the repository. A variable that is not set
# stops the server at start, so it never runs open by mistake.
#
#   worker       every key, every command but the dangerous ones (no KEYS,
#                FLUSHALL, CONFIG, DEBUG, ACL, SHUTDOWN, MONITOR, ...; INFO
#                allowed: the worker reads "cluster" from it)
#   producer     reads only (producer load --verify-ledger checks the
#                simulated provider's ledger and the carts)
#   operator     everything
#   healthcheck  PING and nothing else, without a password (the compose
#                health check)
#   default      off and without a password: a client without credentials
#                gets nothing, and protected mode (on) never refuses the
#                others for a password-less default user
#
# The gateway has no user: it never talks to Redis (and docker-compose.yml
# keeps it off Redis's network).
#
#   sh redis-users.sh [redis-server arguments...]
#   IDEMPAY_REDIS_ACL_ONLY=/path/users.acl sh redis-users.sh   # write the ACL file and exit (tests)
set -eu

: "${IDEMPAY_REDIS_WORKER_PASSWORD:?set IDEMPAY_REDIS_WORKER_PASSWORD (make env writes .env with random passwords)}"
: "${IDEMPAY_REDIS_PRODUCER_PASSWORD:?set IDEMPAY_REDIS_PRODUCER_PASSWORD (make env writes .env with random passwords)}"
: "${IDEMPAY_REDIS_OPERATOR_PASSWORD:?set IDEMPAY_REDIS_OPERATOR_PASSWORD (make env writes .env with random passwords)}"

for pw in "$IDEMPAY_REDIS_WORKER_PASSWORD" "$IDEMPAY_REDIS_PRODUCER_PASSWORD" "$IDEMPAY_REDIS_OPERATOR_PASSWORD"; do
	case "$pw" in
	*[[:space:]]* | '') echo "redis-users.sh: a Redis password must not be empty or hold white space" >&2; exit 1 ;;
	esac
done

acl=${IDEMPAY_REDIS_ACL_ONLY:-/tmp/idempay-users.acl}
umask 077
{
	printf 'user default off resetpass resetkeys resetchannels -@all\n'
	printf 'user worker on >%s ~* resetchannels +@all -@dangerous +info\n' "$IDEMPAY_REDIS_WORKER_PASSWORD"
	printf 'user producer on >%s ~* resetchannels -@all +@read +@connection -@dangerous\n' "$IDEMPAY_REDIS_PRODUCER_PASSWORD"
	printf 'user operator on >%s ~* &* +@all\n' "$IDEMPAY_REDIS_OPERATOR_PASSWORD"
	printf 'user healthcheck on nopass resetkeys resetchannels -@all +ping\n'
} >"$acl"

if [ -n "${IDEMPAY_REDIS_ACL_ONLY:-}" ]; then
	exit 0
fi
exec redis-server /usr/local/etc/redis/redis.conf --aclfile "$acl" "$@"
