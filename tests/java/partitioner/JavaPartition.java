// Kafka's own Java producer's choice of partition for keyed records: one key a line on
// stdin, `<key>\t<partition>` a line on stdout. Run as a single-file program against the
// kafka-clients jar the stack installed (`java -cp <jar> JavaPartition.java <partitions>`);
// the test `partners::partitioning` compares it with the partition firstcome's producer
// chose for the same keys.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;

import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.utils.Utils;

public class JavaPartition {
    public static void main(String[] args) throws Exception {
        int partitions = Integer.parseInt(args[0]);
        StringSerializer serializer = new StringSerializer();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        StringBuilder out = new StringBuilder();
        for (String key; (key = in.readLine()) != null; ) {
            // The key as the Java producer serializes a String key, then the producer's
            // default (built-in) partitioner for a keyed record.
            byte[] bytes = serializer.serialize("survey-submitted", key);
            int partition = BuiltInPartitioner.partitionForKey(bytes, partitions);
            // The same formula spelled out, so a change inside the built-in partitioner
            // shows up here as a disagreement rather than silently.
            int spelled = Utils.toPositive(Utils.murmur2(bytes)) % partitions;
            if (partition != spelled) {
                throw new IllegalStateException("built-in partitioner and murmur2 disagree for " + key);
            }
            out.append(key).append('\t').append(partition).append('\n');
        }
        System.out.print(out);
    }
}
