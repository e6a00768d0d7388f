// A produce/consume round trip against the local broker: scripts/services runs it (as a single-file
// Java program, on the broker's own classpath) to decide that Kafka is really up, not just listening.
import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.*;

public class HealthCheck {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = "__kar_health";
        Properties common = new Properties();
        common.put("bootstrap.servers", bootstrap);
        common.put("request.timeout.ms", "5000");
        common.put("default.api.timeout.ms", "10000");
        try (Admin admin = Admin.create(common)) {
            try {
                admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get();
            } catch (java.util.concurrent.ExecutionException e) {
                if (!(e.getCause() instanceof TopicExistsException)) throw e;
            }
        }
        String marker = "ping-" + UUID.randomUUID();
        Properties p = new Properties();
        p.putAll(common);
        p.put("max.block.ms", "10000");
        long offset;
        try (Producer<String, String> producer = new KafkaProducer<>(p, new StringSerializer(), new StringSerializer())) {
            offset = producer.send(new ProducerRecord<>(topic, 0, null, marker)).get().offset();
        }
        Properties c = new Properties();
        c.putAll(common);
        try (Consumer<String, String> consumer = new KafkaConsumer<>(c, new StringDeserializer(), new StringDeserializer())) {
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seek(tp, offset);
            long deadline = System.currentTimeMillis() + 10000;
            while (System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                    if (marker.equals(r.value())) {
                        System.out.println("kafka round trip ok at offset " + r.offset());
                        return;
                    }
                }
            }
        }
        System.err.println("produced " + marker + " at offset " + offset + " but could not consume it back");
        System.exit(1);
    }
}
