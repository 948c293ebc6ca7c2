#!/usr/bin/env bash
# The benchmarks' HTTP sink: nginx answering 200 to everything, on loopback
# (one worker process, no access log, long keep-alive, bodies up to 16 MiB).
#
#   scripts/sink.sh start DIR PORT   (configuration, pid and logs in DIR/nginx)
#   scripts/sink.sh stop DIR
set -euo pipefail
cmd=${1:?usage: sink.sh start DIR PORT | stop DIR}
dir=${2:?usage: sink.sh start DIR PORT | stop DIR}
case "$cmd" in
start)
    port=${3:?usage: sink.sh start DIR PORT}
    mkdir -p "$dir/nginx"
    cat >"$dir/nginx/nginx.conf" <<NGINX
worker_processes 1;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path $dir/nginx;
    server {
        listen 127.0.0.1:$port;
        client_max_body_size 16m;
        location / { return 200 "ok"; }
    }
}
NGINX
    nginx -c "$dir/nginx/nginx.conf" -p "$dir/nginx"
    ;;
stop)
    if [ -f "$dir/nginx/nginx.pid" ]; then kill "$(cat "$dir/nginx/nginx.pid")" 2>/dev/null || true; fi
    ;;
*)
    echo "usage: sink.sh start DIR PORT | stop DIR" >&2
    exit 2
    ;;
esac
