#!/bin/sh
# Writes .env (the passwords docker-compose.yml needs, random) and
# .idempay/api-keys (the gateway's API-key file, admitting the tenant
# "demo"), unless .env exists already: `make env`, which `make up` runs.
# Both files stay on this machine: .gitignore and .dockerignore list them.
#
#   sh deploy/make-env.sh [directory]   # default: the current directory
set -eu
cd "${1:-.}"

if [ -e .env ]; then
	echo "make-env: .env exists; leaving it (delete it, and .idempay/, to start afresh; then docker compose down -v)" >&2
	exit 0
fi

secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
sha256() {
	if command -v sha256sum >/dev/null 2>&1; then
		printf %s "$1" | sha256sum | cut -d' ' -f1
	else
		printf %s "$1" | shasum -a 256 | cut -d' ' -f1
	fi
}

umask 077
demo="sk_demo_$(secret)"
mkdir -p .idempay && chmod 755 .idempay
printf '# The gateway'"'"'s API keys (GATEWAY_API_KEYS_FILE): <tenant_id> <sha256 of the secret> [limits]\n# Add a tenant: docker compose run --rm gateway --new-api-key NAME; then docker compose kill -s HUP gateway\ndemo %s\n' "$(sha256 "$demo")" >.idempay/api-keys
chmod 644 .idempay/api-keys # read by the gateway's non-root user; it holds hashes only
cat >.env <<ENV
# Written by make env (deploy/make-env.sh): docker-compose.yml's secrets.
# Never commit this file (.gitignore) nor build it into an image (.dockerignore).
IDEMPAY_WORKER_PASSWORD=$(secret)
IDEMPAY_PRODUCER_PASSWORD=$(secret)
IDEMPAY_GATEWAY_PASSWORD=$(secret)
IDEMPAY_OPERATOR_PASSWORD=$(secret)
IDEMPAY_REDIS_WORKER_PASSWORD=$(secret)
IDEMPAY_REDIS_PRODUCER_PASSWORD=$(secret)
IDEMPAY_REDIS_OPERATOR_PASSWORD=$(secret)
# The demo tenant's API key (its hash is in .idempay/api-keys).
IDEMPAY_DEMO_API_KEY=$demo
ENV
echo "make-env: wrote .env and .idempay/api-keys; once up, the checkout page is http://127.0.0.1:8080/#api_key=$demo"
