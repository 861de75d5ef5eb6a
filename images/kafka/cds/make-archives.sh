#!/usr/bin/env bash
# Build-time step of the kafka image (as the official image's jsa_launch): runs a broker and a tool
# once with -XX:ArchiveClassesAtExit to record class-data-sharing archives. kafka-run-class.sh then
# uses them: a broker starts in ~2.4 s instead of ~3.8 s, and with less CPU, which matters when
# three brokers and PostgreSQL share two cores.
set -euo pipefail
work=$(mktemp -d)
sed -e "s|^log.dirs=.*|log.dirs=$work/data|" /etc/kafka/docker/server.properties >"$work/server.properties"
cat >"$work/log4j2.xml" <<'XML'
<Configuration status="WARN">
  <Appenders><Console name="STDOUT" target="SYSTEM_OUT"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers><Root level="INFO"><AppenderRef ref="STDOUT"/></Root></Loggers>
</Configuration>
XML
export KAFKA_LOG4J_OPTS="-Dlog4j2.configurationFile=$work/log4j2.xml"

/opt/kafka/bin/kafka-storage.sh format --cluster-id=5L6g3nShT-eMCtK--X86sw -c "$work/server.properties"
# The broker's archive serves the storage tool too (it loads mostly a subset of the same classes).
KAFKA_OPTS="-XX:ArchiveClassesAtExit=/opt/kafka/kafka.jsa" \
  /opt/kafka/bin/kafka-server-start.sh "$work/server.properties" >"$work/broker.log" 2>&1 &
broker=$!
for _ in $(seq 240); do
  grep -q 'Kafka Server started' "$work/broker.log" && break
  kill -0 "$broker" 2>/dev/null || { cat "$work/broker.log"; exit 1; }
  sleep 0.5
done
grep -q 'Kafka Server started' "$work/broker.log" || { cat "$work/broker.log"; exit 1; }

KAFKA_OPTS="-XX:ArchiveClassesAtExit=/opt/kafka/tools.jsa" \
  /opt/kafka/bin/kafka-topics.sh --bootstrap-server localhost:9092 --create --topic cds --partitions 1
echo cds | /opt/kafka/bin/kafka-console-producer.sh --bootstrap-server localhost:9092 --topic cds

kill -TERM "$broker"
wait "$broker" || true # the archive is written as the JVM exits
rm -rf "$work"
ls -l /opt/kafka/kafka.jsa /opt/kafka/tools.jsa
