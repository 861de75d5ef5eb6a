#!/usr/bin/env bash
# Stand-in for Apache Kafka's bin/kafka-server-start.sh: runs the broker (kafka.Kafka) in the
# foreground (exec, so that signals reach the JVM), logging to stdout.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "USAGE: $0 [-daemon] server.properties [--override property=value]*" >&2
  exit 1
fi
# Tests run up to three brokers plus PostgreSQL on two cores: a modest heap unless overridden.
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"
export KAFKA_JVM_PERFORMANCE_OPTS="${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true}"
export KAFKA_LOG4J_OPTS="${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=/opt/kafka/config/log4j2.xml}"
extra=()
if [ "$1" = -daemon ]; then extra=(-daemon); shift; fi
exec /opt/kafka/bin/kafka-run-class.sh "${extra[@]}" -name kafkaServer kafka.Kafka "$@"
