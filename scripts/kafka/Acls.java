// ACLs for the test accounts of the local broker, which runs with an authorizer: scripts/services
// runs it (as a single-file Java program, on the broker's own classpath) once the broker is up.
// Creating an ACL that exists is a no-op, so running it again changes nothing.
//
//   kar-restorer  what README says a restore needs, on topics named kt-acl-*: topics CREATE, WRITE,
//                 DESCRIBE, READ; groups kar-restore.* READ; transactional IDs kar-restore.* WRITE
//                 and DESCRIBE
//   kar-no-txn    the same but the transactional IDs: a restore must stop in pre-flight
//
// Every other principal the tests use (ANONYMOUS on the plaintext listeners, kar on SASL, the
// client certificate on mutual TLS) is a super user.
import java.util.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.common.acl.*;
import org.apache.kafka.common.resource.*;

public class Acls {
    static AclBinding allow(String user, ResourceType type, String prefix, AclOperation op) {
        return new AclBinding(
            new ResourcePattern(type, prefix, PatternType.PREFIXED),
            new AccessControlEntry("User:" + user, "*", op, AclPermissionType.ALLOW));
    }

    static List<AclBinding> restore(String user, boolean transactions) {
        List<AclBinding> acls = new ArrayList<>();
        for (AclOperation op : List.of(AclOperation.CREATE, AclOperation.WRITE, AclOperation.DESCRIBE, AclOperation.READ)) {
            acls.add(allow(user, ResourceType.TOPIC, "kt-acl-", op));
        }
        acls.add(allow(user, ResourceType.GROUP, "kar-restore.", AclOperation.READ));
        if (transactions) {
            acls.add(allow(user, ResourceType.TRANSACTIONAL_ID, "kar-restore.", AclOperation.WRITE));
            acls.add(allow(user, ResourceType.TRANSACTIONAL_ID, "kar-restore.", AclOperation.DESCRIBE));
        }
        return acls;
    }

    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put("bootstrap.servers", args[0]);
        p.put("request.timeout.ms", "15000");
        p.put("default.api.timeout.ms", "30000");
        List<AclBinding> acls = new ArrayList<>(restore("kar-restorer", true));
        acls.addAll(restore("kar-no-txn", false));
        try (Admin admin = Admin.create(p)) {
            admin.createAcls(acls).all().get();
        }
        System.out.println(acls.size() + " ACLs in place");
    }
}
