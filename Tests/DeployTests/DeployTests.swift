import FarmConfig
import FarmTestSupport
import Foundation
import Postgres
import Testing
import Yams

/// The repository root and its `Deploy/` directory.
let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let deployDir = repoRoot.appendingPathComponent("Deploy")

func read(_ relative: String) throws -> String {
    try String(contentsOf: deployDir.appendingPathComponent(relative), encoding: .utf8)
}

/// Every file under `Deploy/` whose name ends with one of `extensions`.
func deployFiles(_ extensions: [String]) -> [URL] {
    let e = FileManager.default.enumerator(at: deployDir, includingPropertiesForKeys: nil)
    var out: [URL] = []
    while let u = e?.nextObject() as? URL {
        if extensions.contains(where: { u.lastPathComponent.hasSuffix($0) }) { out.append(u) }
    }
    return out.sorted { $0.path < $1.path }
}

/// Environment variables the deployment files may set besides the coordinator's configuration
/// keys (``ConfigKey/all``): the worker's and the CLI's own.
let workerAndClientVariables: Set<String> = ["DUBFARM_KEY_FILE", "DUBFARM_SERVER_KEY", "DUBFARM_COORDINATOR"]
func isKnownVariable(_ name: String) -> Bool {
    Set(ConfigKey.all.map(\.environmentVariable)).contains(name) || workerAndClientVariables.contains(name)
}

typealias Object = [String: Any]

extension Dictionary where Key == String, Value == Any {
    func object(_ k: String) -> Object? { self[k] as? Object }
    func list(_ k: String) -> [Any]? { self[k] as? [Any] }
    func string(_ k: String) -> String? { self[k].map { "\($0)" } }
    /// `a.b.c`
    func at(_ path: String) -> Any? {
        var cur: Any? = self
        for part in path.split(separator: ".") { cur = (cur as? Object)?[String(part)] }
        return cur
    }
}

/// The Kubernetes documents of `Deploy/kubernetes`, by kind and name.
struct Manifests {
    var docs: [(file: String, doc: Object)] = []

    init() throws {
        for url in deployFiles([".yaml", ".yml"]) where url.path.contains("/kubernetes/") {
            for case let doc as Object in try Yams.load_all(yaml: String(contentsOf: url, encoding: .utf8)) {
                docs.append((url.lastPathComponent, doc))
            }
        }
    }

    func all(_ kind: String) -> [Object] { docs.map(\.doc).filter { $0.string("kind") == kind } }
    func one(_ kind: String, _ name: String) -> Object? { all(kind).first { $0.at("metadata.name") as? String == name } }
}

/// `labels` contains every pair of `selector`.
func matches(_ selector: Object?, _ labels: Object?) -> Bool {
    guard let selector, !selector.isEmpty, let labels else { return false }
    return selector.allSatisfy { k, v in labels.string(k) == "\(v)" }
}

/// `key=value` lines grouped by `[Section]`, as systemd reads a unit (comments and blank lines
/// skipped; a key may repeat).
func parseUnit(_ text: String) throws -> [String: [(String, String)]] {
    var sections: [String: [(String, String)]] = [:]
    var current: String?
    for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
        let line = raw.trimmingCharacters(in: .whitespaces)
        if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
        if line.hasPrefix("[") {
            guard line.hasSuffix("]") else { throw UnitError(line: n + 1, text: line) }
            current = String(line.dropFirst().dropLast())
            sections[current!, default: []] = sections[current!] ?? []
            continue
        }
        guard let section = current, let eq = line.firstIndex(of: "="), eq != line.startIndex else { throw UnitError(line: n + 1, text: line) }
        sections[section, default: []].append((String(line[..<eq]).trimmingCharacters(in: .whitespaces),
                                               String(line[line.index(after: eq)...]).trimmingCharacters(in: .whitespaces)))
    }
    return sections
}

struct UnitError: Error, CustomStringConvertible {
    let line: Int, text: String
    var description: String { "line \(line) is neither [Section] nor key=value: \(text)" }
}

/// `NAME=value` lines of an environment file; commented-out assignments (`#NAME=…`) too, so
/// the examples are checked as well.
func environmentAssignments(_ text: String) -> [(name: String, value: String)] {
    text.split(separator: "\n").compactMap { raw in
        var line = raw.trimmingCharacters(in: .whitespaces)
        if line.hasPrefix("#") { line = String(line.dropFirst()) }
        guard let eq = line.firstIndex(of: "="), line[..<eq].allSatisfy({ $0.isUppercase || $0.isNumber || $0 == "_" }),
              !line[..<eq].isEmpty else { return nil }
        return (String(line[..<eq]), String(line[line.index(after: eq)...]))
    }
}

@Suite("Deploy")
struct DeployTests {
    @Test("every YAML file under Deploy/ parses")
    func yamlParses() throws {
        let files = deployFiles([".yaml", ".yml"])
        #expect(files.count >= 6)
        for url in files {
            let docs = try Yams.load_all(yaml: String(contentsOf: url, encoding: .utf8)).map { $0 }
            #expect(!docs.isEmpty, "\(url.lastPathComponent) has no document")
            for d in docs { #expect(d is Object, "\(url.lastPathComponent): every document is a mapping") }
        }
    }

    @Test("Kubernetes: kinds, names, namespace, selectors that match their pods' labels")
    func kubernetesStructure() throws {
        let m = try Manifests()
        let kinds = Set(m.docs.map { $0.doc.string("kind") ?? "" })
        for k in ["Namespace", "Deployment", "Service", "PodDisruptionBudget", "ScaledObject", "TriggerAuthentication", "Secret",
                  "PersistentVolumeClaim"] {
            #expect(kinds.contains(k), "no \(k) in Deploy/kubernetes")
        }
        for (file, d) in m.docs {
            #expect(d.string("apiVersion") != nil && d.at("metadata.name") is String, "\(file): apiVersion and metadata.name")
            if d.string("kind") != "Namespace" { #expect(d.at("metadata.namespace") as? String == "dubfarm", "\(file): namespace dubfarm") }
        }
        let coordinator = try #require(m.one("Deployment", "dubfarm-coordinator"))
        let worker = try #require(m.one("Deployment", "dubfarm-worker"))
        for d in [coordinator, worker] {
            #expect(matches(d.at("spec.selector.matchLabels") as? Object, d.at("spec.template.metadata.labels") as? Object),
                    "\(d.at("metadata.name")!): selector matches the pod labels")
            let containers = try #require(d.at("spec.template.spec.containers") as? [Object])
            for c in containers {
                #expect(c.string("image") != nil)
                #expect(c.at("resources.requests.cpu") != nil && c.at("resources.requests.memory") != nil,
                        "\(d.at("metadata.name")!)/\(c.string("name") ?? "?"): resource requests")
            }
        }
        // The Service selects the coordinator's pods and exposes its named ports.
        let service = try #require(m.one("Service", "dubfarm-coordinator"))
        #expect(matches(service.at("spec.selector") as? Object, coordinator.at("spec.template.metadata.labels") as? Object))
        let cports = ((coordinator.at("spec.template.spec.containers") as? [Object])?.first?.list("ports") as? [Object] ?? [])
        let named = Dictionary(uniqueKeysWithValues: cports.map { ($0.string("name") ?? "", $0.string("containerPort") ?? "") })
        for p in service.at("spec.ports") as? [Object] ?? [] {
            #expect(named[p.string("targetPort") ?? ""] != nil, "service port \(p.string("name") ?? "?") targets a container port")
        }
        #expect(named["work"] == "5555" && named["control"] == "5556")
        // The PDB covers the workers.
        let pdb = try #require(m.one("PodDisruptionBudget", "dubfarm-worker"))
        #expect(matches(pdb.at("spec.selector.matchLabels") as? Object, worker.at("spec.template.metadata.labels") as? Object))
        #expect(pdb.at("spec.maxUnavailable") != nil || pdb.at("spec.minAvailable") != nil)
    }

    @Test("Kubernetes: workers connect to the coordinator Service, get longer to stop than their grace, and secrets exist")
    func kubernetesReferences() throws {
        let m = try Manifests()
        let worker = try #require(m.one("Deployment", "dubfarm-worker"))
        let spec = try #require(worker.at("spec.template.spec") as? Object)
        let container = try #require((spec.list("containers") as? [Object])?.first)
        let args = (container.list("args") ?? []).map { "\($0)" }
        let connect = try #require(args.firstIndex(of: "--connect").map { args[$0 + 1] })
        #expect(connect == "tcp://dubfarm-coordinator:5555", "workers connect to the Service's work port")
        let grace = Double(args.firstIndex(of: "--grace").map { args[$0 + 1] } ?? "30")!
        #expect(Double(spec.string("terminationGracePeriodSeconds") ?? "0")! > grace)

        // Every secret a pod mounts or reads exists with that key; every path a DUBFARM_*_FILE
        // variable names is a key of a mounted secret.
        let secrets = Dictionary(m.all("Secret").map { s in
            (s.at("metadata.name") as! String, Set(((s.object("stringData") ?? s.object("data")) ?? [:]).keys))
        }, uniquingKeysWith: { a, _ in a })
        for d in m.all("Deployment") {
            let pod = try #require(d.at("spec.template.spec") as? Object)
            var volumes: [String: String] = [:]  // volume → secret
            for v in pod.list("volumes") as? [Object] ?? [] {
                if let s = v.at("secret.secretName") as? String {
                    #expect(secrets[s] != nil, "volume \(v.string("name")!) mounts a missing secret \(s)")
                    volumes[v.string("name")!] = s
                }
            }
            for c in (pod.list("containers") as? [Object] ?? []) + (pod.list("initContainers") as? [Object] ?? []) {
                var mounts: [String: String] = [:]  // mount path → secret
                for vm in c.list("volumeMounts") as? [Object] ?? [] {
                    if let s = volumes[vm.string("name")!] { mounts[vm.string("mountPath")!] = s }
                }
                for e in c.list("env") as? [Object] ?? [] {
                    let name = e.string("name")!
                    #expect(isKnownVariable(name), "\(d.at("metadata.name")!): \(name) is not a configuration key")
                    if let ref = e.at("valueFrom.secretKeyRef") as? Object {
                        #expect(secrets[ref.string("name")!]?.contains(ref.string("key")!) == true, "\(name): secret key exists")
                    }
                    if name.hasSuffix("_FILE"), let path = e.string("value"), path.hasPrefix("/etc/dubfarm/") {
                        let dir = (path as NSString).deletingLastPathComponent, file = (path as NSString).lastPathComponent
                        #expect(mounts[dir].flatMap { secrets[$0] }?.contains(file) == true,
                                "\(d.at("metadata.name")!)/\(c.string("name")!): \(name)=\(path) is a key of a mounted secret")
                    }
                }
            }
        }
        // The coordinator's curve secret holds what the security variables name.
        let coordinatorEnv = ((m.one("Deployment", "dubfarm-coordinator")?.at("spec.template.spec.containers") as? [Object])?.first?
            .list("env") as? [Object] ?? []).compactMap { $0.string("name") }
        for v in ["DUBFARM_DATABASE_URL_FILE", "DUBFARM_SECURITY_SECRET_KEY_FILE", "DUBFARM_SECURITY_AUTHORIZED_WORKERS",
                  "DUBFARM_SECURITY_AUTHORIZED_CLIENTS", "DUBFARM_METRICS_LISTEN"] {
            #expect(coordinatorEnv.contains(v), "the coordinator sets \(v)")
        }
    }

    @Test("KEDA: the ScaledObject scales the worker Deployment on a PostgreSQL query with its credentials")
    func kedaTrigger() throws {
        let m = try Manifests()
        let so = try #require(m.one("ScaledObject", "dubfarm-worker"))
        #expect(so.at("spec.scaleTargetRef.name") as? String == "dubfarm-worker")
        #expect(m.one("Deployment", so.at("spec.scaleTargetRef.name") as? String ?? "") != nil)
        let min = so.at("spec.minReplicaCount") as? Int ?? 0, max = try #require(so.at("spec.maxReplicaCount") as? Int)
        #expect(min >= 0 && max >= min && max >= 1)
        let trigger = try #require((so.at("spec.triggers") as? [Object])?.first)
        #expect(trigger.string("type") == "postgresql")
        let meta = try #require(trigger.object("metadata"))
        #expect(meta.string("query")?.isEmpty == false)
        #expect(Double(meta.string("targetQueryValue") ?? "") ?? 0 > 0, "targetQueryValue is a positive number (a string)")
        #expect(meta["targetQueryValue"] is String, "KEDA wants metadata values as strings")
        let authName = try #require(trigger.at("authenticationRef.name") as? String)
        let auth = try #require(m.one("TriggerAuthentication", authName))
        let ref = try #require((auth.at("spec.secretTargetRef") as? [Object])?.first)
        #expect(ref.string("parameter") == "connection")
        let secret = try #require(m.one("Secret", ref.string("name") ?? ""))
        #expect((secret.object("stringData") ?? [:])[ref.string("key") ?? ""] != nil)
    }

    @Test("KEDA: as its read-only role, the query asks for leased + ceil(pending / 4) + fine-tunes at a job's start, middle and end, and cannot write")
    func kedaQueryOnRealSchema() async throws {
        let m = try Manifests()
        let trigger = try #require((m.one("ScaledObject", "dubfarm-worker")?.at("spec.triggers") as? [Object])?.first)
        let query = try #require(trigger.at("metadata.query") as? String)
        #expect(trigger.at("metadata.targetQueryValue") as? String == "1", "one worker per unit the query returns")
        #expect(m.one("Deployment", "dubfarm-worker")?.at("spec.replicas") == nil, "KEDA owns the worker count")
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let admin = try PostgresConnection(url: db.url)
        // The role script as an operator runs it, under a name of this test's own (roles are
        // shared by every database of the cluster).
        let role = "keda_\(UInt32.random(in: 0...UInt32.max))"
        let script = try read("kubernetes/keda-role.sql").replacingOccurrences(of: "dubfarm_keda", with: role)
            .replacingOccurrences(of: ":password", with: "'test'").replacingOccurrences(of: ":\"DBNAME\"", with: "\"\(db.name)\"")
        try admin.execute(script: script)
        defer { _ = try? admin.execute(script: "DROP OWNED BY \(role); DROP ROLE \(role)") }
        let keda = try PostgresConnection(url: db.url.replacingOccurrences(of: "postgresql://postgres@", with: "postgresql://\(role):test@"))
        func wanted() throws -> Int64 { try #require(try keda.query(query).first?[0].decode(Int64.self)) }
        #expect(try wanted() == 0, "an empty farm asks for no workers")
        // Job 1 runs 10 segments; a finished and a cancelled job's segments never count.
        try admin.execute(script: """
            INSERT INTO jobs (id, state, video_name, audio_name) OVERRIDING SYSTEM VALUE VALUES
                (1, 'running', 'a.mp4', 'a.wav'), (2, 'done', 'b.mp4', 'b.wav'), (3, 'cancelled', 'c.mp4', 'c.wav');
            INSERT INTO segments (job_id, idx, start_frame, end_frame, frames_total, state)
            SELECT 1, i, i * 250, i * 250 + 250, 250, 'pending' FROM generate_series(0, 9) i;
            INSERT INTO segments (job_id, idx, start_frame, end_frame, frames_total, state)
            SELECT 2, i, i * 250, i * 250 + 250, 250, 'done' FROM generate_series(0, 3) i;
            INSERT INTO segments (job_id, idx, start_frame, end_frame, frames_total, state)
            SELECT 3, i, i * 250, i * 250 + 250, 250, 'cancelled' FROM generate_series(0, 3) i;
            """)
        func set(_ state: String, _ indices: ClosedRange<Int>) throws {
            try admin.execute(script: state == "leased"
                ? "UPDATE segments SET state = 'leased', lease_token = md5(idx::text), leased_by = 'w' || idx WHERE job_id = 1 AND idx BETWEEN \(indices.lowerBound) AND \(indices.upperBound)"
                : "UPDATE segments SET state = '\(state)', lease_token = NULL, leased_by = NULL WHERE job_id = 1 AND idx BETWEEN \(indices.lowerBound) AND \(indices.upperBound)")
        }
        #expect(try wanted() == 3, "start: 10 pending want ceil(10 / 4) = 3 workers")
        try set("leased", 0...3)
        try set("done", 4...5)
        #expect(try wanted() == 4 + 1, "middle: 4 leased, 4 pending: 4 + 1")
        try set("done", 0...0)
        try set("leased", 6...9)
        #expect(try wanted() == 7, "end: nothing pending, 7 busy workers: keep all 7")
        try set("done", 1...9)
        #expect(try wanted() == 0, "done: nobody needed")
        // A fine-tune in progress keeps its worker too (a job personalising has no claimable segments).
        try admin.execute(script: """
            INSERT INTO jobs (id, state, video_name, audio_name) OVERRIDING SYSTEM VALUE VALUES (4, 'personalising', 'd.mp4', 'd.wav');
            INSERT INTO personalisations (job_id, state, budget_seconds, lease_token, leased_by) VALUES (4, 'leased', 300, 'token', 'gpu1');
            """)
        #expect(try wanted() == 1, "a fine-tune in progress: 1")
        // The role reads; it cannot write.
        #expect(throws: (any Error).self) { try keda.execute(script: "UPDATE segments SET state = 'pending'") }
        #expect(throws: (any Error).self) { try keda.execute(script: "DELETE FROM jobs") }
        #expect(throws: (any Error).self) { try keda.query("SELECT count(*) FROM workers") }
    }

    @Test("every DUBFARM_* variable in Deploy/ is a configuration key or a worker/CLI variable")
    func environmentNames() throws {
        var seen: [(String, String)] = []
        for url in deployFiles([".env", ".service", "Dockerfile", ".yaml", ".yml", ".md"]) {
            let text = try String(contentsOf: url, encoding: .utf8)
            var i = text.startIndex
            while let r = text.range(of: "DUBFARM_", range: i..<text.endIndex) {
                var end = r.upperBound
                while end < text.endIndex, text[end].isUppercase || text[end].isNumber || text[end] == "_" { end = text.index(after: end) }
                seen.append((url.lastPathComponent, String(text[r.lowerBound..<end])))
                i = end
            }
        }
        #expect(seen.count > 20)
        for (file, name) in seen where !name.hasSuffix("_") && !name.hasPrefix("DUBFARM_SECTION") {
            #expect(isKnownVariable(name), "\(file): \(name) is neither a key of ConfigKey.all nor a worker/CLI variable")
        }
        // The database URL file and the media store come from the registry itself.
        let registry = Set(ConfigKey.all.map(\.environmentVariable))
        #expect(registry.contains("DUBFARM_DATABASE_URL_FILE") && registry.contains("DUBFARM_MEDIA_STORE"))
    }

    @Test("compose: postgres, coordinator and a scalable worker service that stops gracefully")
    func compose() throws {
        let doc = try #require(try Yams.load(yaml: read("compose.yaml")) as? Object)
        let services = try #require(doc.object("services"))
        #expect(Set(services.keys).isSuperset(of: ["postgres", "coordinator", "worker"]))
        let worker = try #require(services.object("worker"))
        #expect((worker.at("deploy.replicas") as? Int ?? 0) >= 1)
        let command = (worker.list("command") ?? []).map { "\($0)" }
        #expect(command.first == "--connect" && command.dropFirst().first == "tcp://coordinator:5555")
        let grace = Double(command.firstIndex(of: "--grace").map { command[$0 + 1] } ?? "30")!
        let stop = try #require(worker.string("stop_grace_period"))
        #expect(Double(stop.replacingOccurrences(of: "s", with: ""))! > grace, "docker waits longer than the worker's grace")
        let coordinator = try #require(services.object("coordinator"))
        for name in (coordinator.object("environment") ?? [:]).keys { #expect(isKnownVariable(name), "compose: \(name)") }
        let declared = Set(doc.object("secrets")?.keys.map { $0 } ?? [])
        for (name, s) in services {
            for ref in (s as? Object)?.list("secrets") ?? [] { #expect(declared.contains("\(ref)"), "\(name) uses undeclared secret \(ref)") }
        }
        #expect(coordinator.at("build.target") as? String == "coordinator" && worker.at("build.target") as? String == "worker")
    }

    @Test("Dockerfile: built with the Swift toolchain, run on debian:12-slim with the runtime libraries only")
    func dockerfile() throws {
        let text = try read("docker/Dockerfile")
        let froms = text.split(separator: "\n").filter { $0.hasPrefix("FROM ") }.map(String.init)
        #expect(froms.contains { $0.contains("AS build") && $0.contains("SWIFT_IMAGE") } && text.contains("ARG SWIFT_IMAGE=swift:"))
        #expect(froms.contains("FROM debian:12-slim AS runtime"))
        #expect(froms.contains("FROM runtime AS coordinator") && froms.contains("FROM runtime AS worker"))
        for lib in ["libzmq5", "libavformat59", "libavcodec59", "libavutil57", "libswscale6", "libswresample4", "libopenblas0", "libpq5"] {
            #expect(text.contains(lib), "the runtime installs \(lib)")
        }
        let runtime = text.components(separatedBy: "AS runtime")[1]
        #expect(!runtime.contains("-dev "), "no -dev packages at run time")
        #expect(text.contains("--static-swift-stdlib"))
    }

    @Test("systemd units parse and run the right commands, restart, and stop gracefully")
    func systemdUnits() throws {
        let coordinator = try parseUnit(read("systemd/dubfarm-coordinator.service"))
        let worker = try parseUnit(read("systemd/dubfarm-worker@.service"))
        for (name, unit) in [("coordinator", coordinator), ("worker", worker)] {
            #expect(Set(unit.keys) == ["Unit", "Service", "Install"], "\(name): sections")
            let service = Dictionary(unit["Service"]!, uniquingKeysWith: { a, _ in a })
            #expect(service["EnvironmentFile"]?.hasPrefix("/etc/dubfarm/") == true, "\(name): EnvironmentFile")
            #expect(["always", "on-failure"].contains(service["Restart"] ?? ""), "\(name): Restart=")
            #expect(service["KillSignal"] == "SIGTERM", "\(name): KillSignal=SIGTERM")
            #expect(service["TimeoutStopSec"].flatMap(Int.init) != nil, "\(name): TimeoutStopSec")
            #expect(unit["Install"]!.contains { $0 == ("WantedBy", "multi-user.target") })
        }
        let cs = Dictionary(coordinator["Service"]!, uniquingKeysWith: { a, _ in a })
        #expect(cs["ExecStart"]?.contains("/dubfarm coordinator --config ") == true)
        #expect(cs["ExecStartPre"]?.contains("/dubfarm migrate") == true)
        let ws = Dictionary(worker["Service"]!, uniquingKeysWith: { a, _ in a })
        let exec = try #require(ws["ExecStart"])
        #expect(exec.contains("/dubfarm worker --connect ${WORKER_CONNECT}"))
        // The stop timeout outlasts the worker's grace period, so systemd never SIGKILLs a
        // worker that is still allowed to finish its segment.
        let env = Dictionary(environmentAssignments(try read("systemd/worker.env")), uniquingKeysWith: { a, _ in a })
        let grace = try #require(env["WORKER_GRACE"].flatMap(Double.init))
        #expect(exec.contains("--grace ${WORKER_GRACE}"))
        #expect(Double(ws["TimeoutStopSec"]!)! > grace)
        // The environment files set only known variables (commented examples included).
        for file in ["systemd/coordinator.env", "systemd/worker.env"] {
            for (name, _) in environmentAssignments(try read(file)) where name.hasPrefix("DUBFARM_") {
                #expect(isKnownVariable(name), "\(file): \(name)")
            }
        }
        let coordinatorEnv = environmentAssignments(try read("systemd/coordinator.env")).map(\.name)
        #expect(coordinatorEnv.contains("DUBFARM_DATABASE_URL_FILE") || coordinatorEnv.contains("DUBFARM_DATABASE_URL"))
    }
}
