/**
 * The Kafka Streams baseline of exactly's benchmark scenario S3 (consume-transform-produce,
 * exactly once): a Kafka Streams application with {@code processing.guarantee=exactly_once_v2}
 * that copies every record of an input topic to an output topic unchanged: the same copy as
 * exactly's Kafka-mode copier does (key and value as raw bytes; Kafka Streams also carries each
 * record's headers and timestamp over, and the producer's default partitioner picks the output
 * partition, as it does for the copier).
 *
 * <p>Usage:
 * <pre>
 * java -Xmx1g -cp 'bench/streams/target/streams-copy.jar:bench/streams/target/dependency/*' \
 *   exactly.bench.StreamsCopy --bootstrap HOST:PORT --input TOPIC --output TOPIC \
 *   --application-id ID [--commit-interval-ms 100] [--threads 1] [--state-dir DIR] \
 *   [--batch-size BYTES] [--linger-ms MS]
 * </pre>
 *
 * <p>It prints one line, {@code READY}, to stdout when Kafka Streams first reaches the RUNNING
 * state, and then runs until SIGTERM (or SIGINT), on which it closes Kafka Streams (waiting at
 * most 10 s) and exits with the JVM's status for that signal (143 for SIGTERM). An uncaught
 * exception in a stream thread, or the ERROR state, is printed to stderr and ends the program
 * with exit status 1; bad arguments end it with status 2.
 * Kafka's own log goes to stderr, warnings and errors only (see simplelogger.properties).
 */
package exactly.bench;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Comparator;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Stream;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;

/** Copies one topic to another with Kafka Streams, exactly once. */
public final class StreamsCopy {
    /** How long the shutdown hook waits for Kafka Streams to close. */
    private static final Duration CLOSE_TIMEOUT = Duration.ofSeconds(10);

    private static final Set<String> OPTIONS = Set.of(
            "bootstrap", "input", "output", "application-id", "commit-interval-ms", "threads", "state-dir",
            "batch-size", "linger-ms");

    private static final String USAGE = "usage: StreamsCopy --bootstrap SERVERS --input TOPIC --output TOPIC"
            + " --application-id ID [--commit-interval-ms 100] [--threads 1] [--state-dir DIR]"
            + " [--batch-size BYTES] [--linger-ms MS]";

    private StreamsCopy() {}

    public static void main(String[] args) throws InterruptedException {
        Map<String, String> options;
        try {
            options = parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println("StreamsCopy: " + e.getMessage());
            System.err.println(USAGE);
            System.exit(2);
            return;
        }

        // Without --state-dir, a fresh temporary directory that the program removes on exit.
        Path tempStateDir = null;
        String stateDir = options.get("state-dir");
        if (stateDir == null) {
            try {
                tempStateDir = Files.createTempDirectory("streams-copy-");
            } catch (IOException e) {
                throw new UncheckedIOException("cannot create a temporary state directory", e);
            }
            stateDir = tempStateDir.toString();
        }

        KafkaStreams streams = new KafkaStreams(topology(options.get("input"), options.get("output")),
                config(options, stateDir));

        // Released when Kafka Streams reaches the ERROR state; on SIGTERM the JVM just runs the hook.
        CountDownLatch failed = new CountDownLatch(1);
        AtomicReference<Throwable> cause = new AtomicReference<>();
        AtomicBoolean ready = new AtomicBoolean();

        streams.setStateListener((newState, oldState) -> {
            // RUNNING comes back after every rebalance: announce the first one only.
            if (newState == KafkaStreams.State.RUNNING && ready.compareAndSet(false, true)) {
                System.out.println("READY");
                System.out.flush();
            } else if (newState == KafkaStreams.State.ERROR) {
                failed.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(exception -> {
            cause.compareAndSet(null, exception);
            System.err.println("StreamsCopy: uncaught exception in a stream thread: " + exception);
            exception.printStackTrace();
            // Stops every stream thread; the client then enters ERROR, which ends the program.
            return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });

        Path removeOnExit = tempStateDir;
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            if (!streams.close(CLOSE_TIMEOUT)) {
                System.err.println("StreamsCopy: Kafka Streams did not close within " + CLOSE_TIMEOUT);
            }
            if (removeOnExit != null) {
                deleteRecursively(removeOnExit);
            }
        }, "streams-copy-shutdown"));

        try {
            streams.start();
        } catch (RuntimeException e) {
            System.err.println("StreamsCopy: cannot start Kafka Streams: " + e);
            e.printStackTrace();
            System.exit(1);
        }

        // Until SIGTERM (the JVM exits from under this wait) or the ERROR state.
        failed.await();
        Throwable reason = cause.get();
        System.err.println("StreamsCopy: Kafka Streams entered the ERROR state"
                + (reason == null ? "" : ": " + reason));
        System.exit(1);
    }

    /** The copy: every record of {@code input} to {@code output}, bytes unchanged. */
    static Topology topology(String input, String output) {
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(input, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
                .to(output, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));
        return builder.build();
    }

    /**
     * The Kafka Streams configuration. Only what is set here differs from Kafka Streams' own
     * defaults (which already tune the embedded clients for exactly-once: the producer is
     * idempotent and transactional, the consumer reads read_committed, and so on).
     */
    static Properties config(Map<String, String> options, String stateDir) {
        Properties props = new Properties();
        // Identity and cluster: the application id is also the consumer group id and the
        // prefix of the transactional ids.
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, options.get("application-id"));
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, options.get("bootstrap"));
        // The scenario: exactly once, with one transactional producer per stream thread (EOS v2).
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        // How often a stream thread commits its transaction (the input offsets and the output
        // records together): the latency/throughput knob. 100 ms is also Kafka Streams' own
        // default under exactly-once; set explicitly so that runs can compare settings.
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, options.getOrDefault("commit-interval-ms", "100"));
        // Stream threads in this process; each has its own consumer and transactional producer.
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, options.getOrDefault("threads", "1"));
        // Local state: this stateless copy has no persistent store, so Kafka Streams writes
        // nothing there; set so that no run touches the shared default (/tmp/kafka-streams).
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        // A new group reads the input from its beginning, as the benchmark produces the input
        // first (Kafka Streams' default already is earliest; set so that it cannot change).
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        // Internal topics (this topology creates none) would get one replica, as on a
        // single-broker benchmark cluster.
        props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, "1");
        // The embedded producer tuned for throughput, as a Kafka Streams user would: larger
        // batches (the Java producer's default batch.size, 16 KB, is 16 records of 1 KB per
        // partition) and a few ms to fill them. Without the options, the client defaults.
        if (options.containsKey("batch-size")) {
            props.put(StreamsConfig.producerPrefix(ProducerConfig.BATCH_SIZE_CONFIG), options.get("batch-size"));
        }
        if (options.containsKey("linger-ms")) {
            props.put(StreamsConfig.producerPrefix(ProducerConfig.LINGER_MS_CONFIG), options.get("linger-ms"));
        }
        // Raw bytes in and out (also given to the topology explicitly).
        props.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
        props.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
        return props;
    }

    /** {@code --name value} pairs; the required ones must be there, numbers must be numbers. */
    static Map<String, String> parse(String[] args) {
        Map<String, String> options = new HashMap<>();
        for (int i = 0; i < args.length; i += 2) {
            String arg = args[i];
            if (!arg.startsWith("--") || !OPTIONS.contains(arg.substring(2))) {
                throw new IllegalArgumentException("unknown argument " + arg);
            }
            if (i + 1 >= args.length) {
                throw new IllegalArgumentException(arg + " needs a value");
            }
            options.put(arg.substring(2), args[i + 1]);
        }
        for (String required : new String[] {"bootstrap", "input", "output", "application-id"}) {
            if (!options.containsKey(required)) {
                throw new IllegalArgumentException("--" + required + " is required");
            }
        }
        for (String number : new String[] {"commit-interval-ms", "threads", "batch-size", "linger-ms"}) {
            String value = options.get(number);
            if (value != null) {
                try {
                    if (Integer.parseInt(value) < (number.equals("threads") ? 1 : 0)) {
                        throw new IllegalArgumentException("--" + number + " is out of range: " + value);
                    }
                } catch (NumberFormatException e) {
                    throw new IllegalArgumentException("--" + number + " is not a number: " + value);
                }
            }
        }
        return options;
    }

    /** Removes a directory tree, ignoring what cannot be removed. */
    private static void deleteRecursively(Path root) {
        try (Stream<Path> paths = Files.walk(root)) {
            paths.sorted(Comparator.reverseOrder()).forEach(path -> path.toFile().delete());
        } catch (IOException ignored) {
            // A leftover temporary directory is harmless.
        }
    }
}
