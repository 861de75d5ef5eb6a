#!/usr/bin/env bash
# Stand-in for Apache Kafka's bin/kafka-run-class.sh: runs a main class from the jars in
# /opt/kafka/libs, honouring the same variables (KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS,
# KAFKA_OPTS, KAFKA_LOG4J_OPTS, KAFKA_JMX_OPTS with JMX_PORT, CLASSPATH, JAVA_HOME).
# Defaults suit short-lived tools on a small machine; kafka-server-start.sh sets the broker's.
set -euo pipefail
set -f # the *_OPTS variables are split into words below, never globbed

base_dir=/opt/kafka
if [ $# -lt 1 ]; then
  echo "USAGE: $0 [-daemon] [-name servicename] [-loggc] classname [opts]" >&2
  exit 1
fi

daemon_name=""
while [ $# -gt 0 ]; do
  case "$1" in
    -name) daemon_name=$2; shift 2 ;;
    -loggc) shift ;; # GC log files are not kept in containers
    -daemon) daemon_name=${daemon_name:-kafka}; daemon=1; shift ;;
    *) break ;;
  esac
done

classpath="${CLASSPATH:+$CLASSPATH:}$base_dir/libs/*"
heap_opts=${KAFKA_HEAP_OPTS:--Xmx256m}
# Tools live for seconds: the C1 compiler and the serial collector start fastest.
perf_opts=${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true}
log4j_opts=${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=$base_dir/config/tools-log4j2.xml}
jmx_opts=""
if [ -n "${JMX_PORT:-}" ]; then
  jmx_opts="${KAFKA_JMX_OPTS:--Dcom.sun.management.jmxremote -Dcom.sun.management.jmxremote.authenticate=false -Dcom.sun.management.jmxremote.ssl=false} -Dcom.sun.management.jmxremote.port=$JMX_PORT"
fi
java=${JAVA_HOME:+$JAVA_HOME/bin/}java
# Class-data-sharing archives recorded when the image was built (cds/make-archives.sh): faster
# start-up. The JVM ignores an archive that does not match; KAFKA_OPTS can override it.
case "$1" in
  kafka.Kafka | kafka.tools.StorageTool) cds=$base_dir/kafka.jsa ;;
  *) cds=$base_dir/tools.jsa ;;
esac
cds_opts=""
if [ -r "$cds" ]; then cds_opts="-XX:SharedArchiveFile=$cds"; fi

# shellcheck disable=SC2206 # word splitting of the option strings is intended, as in Kafka's script
cmd=("$java" $heap_opts $perf_opts $cds_opts $jmx_opts $log4j_opts ${KAFKA_OPTS:-} -cp "$classpath" "$@")
if [ -n "${daemon:-}" ]; then
  nohup "${cmd[@]}" >"$base_dir/logs/$daemon_name.out" 2>&1 </dev/null &
else
  exec "${cmd[@]}"
fi
