#!/bin/sh
# Default command of theseus/busybox: serve an index page over HTTP with busybox httpd.
#
# The page names the container (CONTAINER_NAME, SERVICE_NAME, APP_NAME) so that tests and
# examples can tell instances apart. HTTP_PORT (default 5000) is the port inside the container.
#
# The shell is PID 1: without a trap it would ignore SIGTERM and every stop would wait for the
# SIGKILL at the end of the grace period. The trap makes a graceful stop exit 0 at once.
#
# The trap is set first: a stop that comes right after the start (a scale-down, a rollout)
# must not find a shell without it, which would wait for the SIGKILL.
child=""
trap 'if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; fi; exit 0' TERM INT
port="${HTTP_PORT:-5000}"
mkdir -p /var/www
cat > /var/www/index.html <<PAGE
<!doctype html>
<html><head><title>${APP_NAME:-theseus} ${CONTAINER_NAME}</title></head>
<body>
<h1>${APP_NAME}</h1>
<p>CONTAINER_NAME=${CONTAINER_NAME}</p>
<p>SERVICE_NAME=${SERVICE_NAME}</p>
<p>APP_NAME=${APP_NAME}</p>
</body></html>
PAGE

httpd -f -p "$port" -h /var/www &
child=$!
echo "started ${CONTAINER_NAME} APP_NAME=${APP_NAME}"
wait "$child"
exit $?
