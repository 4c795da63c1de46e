#!/usr/bin/env bash
# EMR bootstrap action: installs Sluice on every node. The primary node runs the
# scheduler; core and task nodes run executors that register with it.
#
#   --bootstrap-actions Path=s3://BUCKET/sluice/bootstrap.sh,Args=[s3://BUCKET/sluice/sluice,SLOTS,s3://BUCKET/sluice/state]
#
# Arguments: the S3 URI of the `sluice` binary (built for the cluster's architecture),
# the task slots of each executor (default: the node's vCPUs), and an S3 prefix that
# keeps a copy of the scheduler's run store (recommended: the primary node's disk ends
# with the cluster; a new cluster given the same prefix restores the run history,
# registered jobs, backfills and commit recovery from it).
set -euo pipefail

BINARY_URI="${1:?the S3 URI of the sluice binary}"
SLOTS="${2:-$(nproc)}"
STATE_BACKUP="${3:-}"
STATE_DIR=/mnt/sluice

sudo aws s3 cp "$BINARY_URI" /usr/local/bin/sluice
sudo chmod 0755 /usr/local/bin/sluice
sudo mkdir -p "$STATE_DIR"
sudo chown hadoop:hadoop "$STATE_DIR"

# instance.json says whether this node is the primary; job-flow.json names it.
IS_PRIMARY=$(python3 -c 'import json;print(str(json.load(open("/mnt/var/lib/info/instance.json")).get("isMaster", False)).lower())')
PRIMARY_HOST=$(python3 -c 'import json;print(json.load(open("/mnt/var/lib/info/job-flow.json"))["masterPrivateDnsName"])')
HOST=$(hostname -f)

if [ "$IS_PRIMARY" = "true" ]; then
  # Not yet wired here: TLS and tokens (--tls-cert/--tls-key/--tls-client-ca,
  # --tokens-file, as the Helm chart mounts them). Until then the scheduler opts out
  # explicitly, relies on the cluster's security groups and logs INSECURE.
  ROLE_ARGS="scheduler --bind 0.0.0.0 --external-host $HOST --port 50050 --state-dir $STATE_DIR --insecure"
  if [ -n "$STATE_BACKUP" ]; then
    ROLE_ARGS="$ROLE_ARGS --state-backup $STATE_BACKUP"
  fi
else
  ROLE_ARGS="executor --scheduler $PRIMARY_HOST:50050 --bind 0.0.0.0 --external-host $HOST --port 50051 --grpc-port 50052 --health-port 50053 --vcores $SLOTS --work-dir $STATE_DIR/work"
fi

sudo tee /etc/systemd/system/sluice.service >/dev/null <<UNIT
[Unit]
Description=Sluice ($([ "$IS_PRIMARY" = "true" ] && echo scheduler || echo executor))
After=network-online.target
Wants=network-online.target

[Service]
User=hadoop
Environment=RUST_LOG=info
EnvironmentFile=-/etc/sluice.env
ExecStart=/usr/local/bin/sluice $ROLE_ARGS
Restart=on-failure
# Executors finish their running tasks before they stop.
TimeoutStopSec=300

[Install]
WantedBy=multi-user.target
UNIT

sudo systemctl daemon-reload
sudo systemctl enable --now sluice.service
