package dev.firstcome.partner;

import java.io.FileReader;
import java.io.IOException;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Properties;
import java.util.UUID;

import io.apicurio.registry.serde.avro.AvroKafkaDeserializer;
import io.apicurio.registry.serde.avro.AvroKafkaSerializer;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * A partner service as another team would write it: Kafka's Java client and the registry's own
 * Avro serde, nothing of firstcome's. It reads the first {@code SurveySubmitted} on the topic
 * (written by firstcome), then produces an entry of its own for a member with the schema the
 * registry holds for the topic (never registering one), compressed with zstd and placed by the
 * Java producer's partitioner.
 *
 * <p>Argument: a properties file. {@code kafka.*} keys are the Kafka client's properties (the
 * prefix removed); {@code registry.url} is the registry's v3 API; {@code topic}, {@code
 * event.id}, {@code member.id} and {@code entry.id} say what to read and what to enter. Output,
 * one line each: {@code consumed <entry_id> <user_id> <channel>} and {@code produced <partition>
 * <offset>}. Exits non-zero on any failure.
 */
public final class Partner {
    private static final Duration READ_TIMEOUT = Duration.ofSeconds(60);

    public static void main(String[] args) throws Exception {
        Properties config = new Properties();
        try (FileReader reader = new FileReader(args[0])) {
            config.load(reader);
        }
        String topic = config.getProperty("topic");

        GenericRecord seen = consumeOne(config, topic);
        System.out.printf("consumed %s %s %s%n", seen.get("entry_id"), seen.get("user_id"),
            ((GenericRecord) seen.get("client")).get("channel"));

        RecordMetadata sent = produceEntry(config, topic, seen.getSchema());
        System.out.printf("produced %d %d%n", sent.partition(), sent.offset());
    }

    /** Kafka properties: the {@code kafka.} keys of the file. */
    private static Properties kafka(Properties config) {
        Properties props = new Properties();
        for (String key : config.stringPropertyNames()) {
            if (key.startsWith("kafka.")) {
                props.setProperty(key.substring("kafka.".length()), config.getProperty(key));
            }
        }
        return props;
    }

    /** The registry's serde settings: resolve what is registered, never register. */
    private static void registry(Properties props, Properties config) {
        props.put("apicurio.registry.url", config.getProperty("registry.url"));
        props.put("apicurio.registry.auto-register", "false");
        props.put("apicurio.registry.find-latest", "true");
        // The schema id in the record (magic byte + 4-byte id), as firstcome writes it.
        props.put("apicurio.registry.headers.enabled", "false");
    }

    private static GenericRecord consumeOne(Properties config, String topic) {
        Properties props = kafka(config);
        registry(props, config);
        props.put(ConsumerConfig.GROUP_ID_CONFIG, "java-partner-" + UUID.randomUUID());
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, AvroKafkaDeserializer.class.getName());
        try (KafkaConsumer<String, GenericRecord> consumer = new KafkaConsumer<>(props)) {
            consumer.subscribe(List.of(topic));
            Instant deadline = Instant.now().plus(READ_TIMEOUT);
            while (Instant.now().isBefore(deadline)) {
                for (ConsumerRecord<String, GenericRecord> record : consumer.poll(Duration.ofMillis(500))) {
                    return record.value();
                }
            }
        }
        throw new IllegalStateException("no record on " + topic + " within " + READ_TIMEOUT);
    }

    private static RecordMetadata produceEntry(Properties config, String topic, Schema schema) throws Exception {
        Properties props = kafka(config);
        registry(props, config);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        props.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "zstd");
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, AvroKafkaSerializer.class.getName());

        String member = config.getProperty("member.id");
        long now = System.currentTimeMillis();
        Schema answerSchema = schema.getField("answers").schema().getElementType();
        GenericRecord answer = new GenericData.Record(answerSchema);
        answer.put("question", "satisfaction");
        answer.put("answer", "5");
        GenericRecord client = new GenericData.Record(schema.getField("client").schema());
        client.put("channel", "partner");
        client.put("user_agent", "java-partner");
        GenericRecord entry = new GenericData.Record(schema);
        entry.put("event_id", config.getProperty("event.id"));
        entry.put("entry_id", config.getProperty("entry.id"));
        entry.put("user_id", member);
        entry.put("answers", List.of(answer));
        entry.put("submitted_at", now);
        entry.put("accepted_at", now);
        entry.put("client", client);
        // Fields the partner does not know take their schema defaults (e.g. the place in line).
        for (Schema.Field field : schema.getFields()) {
            if (entry.get(field.name()) == null && field.hasDefaultValue()) {
                entry.put(field.name(), GenericData.get().getDefaultValue(field));
            }
        }
        try (KafkaProducer<String, GenericRecord> producer = new KafkaProducer<>(props)) {
            return producer.send(new ProducerRecord<>(topic, member, entry)).get();
        }
    }

    private Partner() {}
}
