#!/usr/bin/env bash
# Stand-in for Apache Kafka's bin/kafka-server-stop.sh: asks the broker JVM(s) to shut down.
pids=$(pgrep -f 'java.* kafka\.Kafka ' || true)
if [ -z "$pids" ]; then
  echo "No kafka server to stop"
  exit 1
fi
# shellcheck disable=SC2086 # one pid per word
kill -s TERM $pids
