import DubfarmCore
import FarmConfig
import FarmTestSupport
import Foundation
import LocalFarm
import Postgres
import Testing
import Yams

// The deployment files (Deploy/) are checked in two ways. Validators that their makers publish
// decide whether each file is well-formed: the Kubernetes and KEDA schemas (Validators/validate.py),
// kustomize itself, systemd-analyze, the Compose schema or `docker compose config`. The checks
// here are the ones no validator can make: that the files agree with each other and with the
// program (selectors, ports, secrets, keys readable by the user that runs, grace periods,
// configuration keys, the KEDA query on the real schema).

@Suite("Deploy")
struct DeployTests {
    // MARK: Validators

    @Test("every Kubernetes manifest passes the Kubernetes 1.31 schemas (strict) and KEDA's CRD schemas")
    func kubernetesManifestsValidate() throws {
        let k = try KubernetesFiles()
        #expect(k.kustomizations.count >= 3, "base and two overlays")
        #expect(k.manifests.count >= 6)
        // Patches and kustomize configurations are partial by design: the renderings check them.
        try validate(["kubernetes", "--kubernetes-version", kubernetesVersion] + k.manifests.map(\.path), "Deploy/kubernetes manifests")
    }

    @Test("every kustomization renders, and every rendering passes the Kubernetes and KEDA schemas",
          .enabled(if: Kustomize.found.missing == nil, Comment(rawValue: Kustomize.found.missing ?? "")))
    func renderingsValidate() throws {
        #expect(Kustomize.targets.count >= 3)
        let dir = try temporaryDirectory("renderings")
        defer { try? FileManager.default.removeItem(at: dir) }
        for target in Kustomize.targets {
            let file = dir.appendingPathComponent(target.replacingOccurrences(of: "/", with: "-") + ".yaml")
            try Kustomize.found.render(target).write(to: file, atomically: true, encoding: .utf8)
            try validate(["kubernetes", "--kubernetes-version", kubernetesVersion, file.path], "kubectl kustomize \(target)")
        }
    }

    @Test("systemd-analyze verify accepts the units, without a single warning")
    func systemdVerify() throws {
        let analyze = try #require(systemdAnalyze, "systemd-analyze (package systemd: tools/install-deps.sh)")
        let root = try systemdRoot()
        defer { try? FileManager.default.removeItem(at: root) }
        for unit in units + ["dubfarm-worker@1.service"] {
            let path = unit.hasSuffix("@1.service") ? unit : root.appendingPathComponent("etc/systemd/system/\(unit)").path
            let r = try run(analyze, ["verify", "--root=\(root.path)", "--man=no", path])
            #expect(r.status == 0 && r.stdout.isEmpty && r.stderr.isEmpty, "systemd-analyze verify \(unit):\n\(r.stdout)\(r.stderr)")
        }
    }

    @Test("systemd-analyze security rates both units OK or better (exposure below 5.0)")
    func systemdSecurity() throws {
        let analyze = try #require(systemdAnalyze, "systemd-analyze (package systemd: tools/install-deps.sh)")
        for unit in units {
            // --threshold is in tenths: 49 fails an exposure of 5.0 (MEDIUM) or more.
            let r = try run(analyze, ["security", "--offline=true", "--threshold=49", "--no-pager", deployDir.appendingPathComponent("systemd/\(unit)").path])
            let verdict = r.stdout.split(separator: "\n").last { $0.contains("Overall exposure level") }.map(String.init) ?? r.stderr
            #expect(r.status == 0 && ["OK", "SAFE", "PERFECT"].contains { verdict.contains(" \($0) ") }, "\(unit): \(verdict)")
        }
    }

    @Test("compose: docker compose config accepts the file, or (without the plugin) the Compose schema does")
    func composeValidates() throws {
        if let docker = which("docker"), let v = try? run(docker, ["compose", "version"]), v.status == 0 {
            // In a copy beside stand-ins for the git-ignored secret files it names.
            let copy = try temporaryDirectory("compose")
            defer { try? FileManager.default.removeItem(at: copy) }
            let file = copy.appendingPathComponent("Deploy/compose.yaml")
            try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try read("compose.yaml").write(to: file, atomically: true, encoding: .utf8)
            let doc = try #require(try Yams.load(yaml: read("compose.yaml")) as? Object)
            for case let secret as Object in (doc.object("secrets") ?? [:]).values {
                guard let path = secret.string("file") else { continue }
                let stand = file.deletingLastPathComponent().appendingPathComponent(path)
                try FileManager.default.createDirectory(at: stand.deletingLastPathComponent(), withIntermediateDirectories: true)
                try "placeholder for the test\n".write(to: stand, atomically: true, encoding: .utf8)
            }
            let r = try run(docker, ["compose", "-f", file.path, "config", "--quiet"])
            #expect(r.status == 0, "docker compose config:\n\(r.stderr)")
        } else {
            try validate(["compose", deployDir.appendingPathComponent("compose.yaml").path], "Deploy/compose.yaml")
        }
    }

    @Test("every YAML file under Deploy/ parses")
    func yamlParses() throws {
        let all = files(under: deployDir, [".yaml", ".yml"])
        #expect(all.count >= 12)
        for url in all {
            let docs = try Yams.load_all(yaml: String(contentsOf: url, encoding: .utf8)).map { $0 }
            #expect(!docs.isEmpty && docs.allSatisfy { $0 is Object }, "\(relative(url)): mappings")
        }
    }

    // MARK: Kubernetes cross-references

    @Test("Kubernetes base: selectors, ports, probes, grace, weights, images, KEDA and NetworkPolicy agree")
    func baseReferences() throws {
        try checkKubernetesReferences(try Manifests.base())
    }

    @Test("Kubernetes renderings: the same agreements hold in base and every overlay, and every Secret read exists or has the dev layout",
          .enabled(if: Kustomize.found.missing == nil, Comment(rawValue: Kustomize.found.missing ?? "")))
    func renderedReferences() throws {
        var layouts: [String: [[String]]] = [:]
        for target in Kustomize.targets {
            let m = try Manifests(origin: "kubectl kustomize \(target)", rendered: try Kustomize.found.render(target))
            try checkKubernetesReferences(m)
            // Each Secret read, with the keys read from it.
            let refs = secretReferences(m)
            let bySecret = Dictionary(grouping: refs, by: \.secret).mapValues { Set($0.map(\.key)) }
            layouts[target] = bySecret.values.map { $0.sorted() }.sorted { $0.joined(separator: ",") < $1.joined(separator: ",") }
            let secrets = m.all("Secret")
            if !secrets.isEmpty {
                // A rendering that makes its Secrets: every one read exists with every key read.
                let keys = Dictionary(secrets.map { s in ("\(s.at("metadata.name") ?? "")", Set(((s.object("data") ?? s.object("stringData")) ?? [:]).keys)) },
                                      uniquingKeysWith: { a, _ in a })
                for r in refs {
                    #expect(keys[r.secret]?.contains(r.key) == true, "\(m.origin): \(r.user) reads key \(r.key) of Secret \(r.secret), which it lacks")
                }
            }
        }
        // A rendering that reads existing Secrets reads the same keys, grouped the same way, as
        // the one that makes them (overlays/dev): the README's `kubectl create secret` lines fit both.
        let dev = try #require(layouts["overlays/dev"], "overlays/dev makes its Secrets")
        for (target, layout) in layouts { #expect(layout == dev, "\(target) reads Secrets laid out as \(layout), dev as \(dev)") }
    }

    @Test("Kubernetes: every pod meets the restricted Pod Security Standard, with a read-only root")
    func podSecurity() throws {
        let k = try KubernetesFiles()
        checkRestricted(try Manifests.base())
        checkRestricted(try Manifests(origin: "standalone manifests", files: k.standalone))
        if Kustomize.found.missing == nil {
            for target in Kustomize.targets { checkRestricted(try Manifests(origin: "kubectl kustomize \(target)", rendered: try Kustomize.found.render(target))) }
        }
    }

    @Test("Kubernetes: the user each pod runs as can read its key files, and no one else can (kubelet's modes; as root, read for real)")
    func kubernetesKeysReadable() throws {
        try checkKeysReadable(try Manifests.base())
        if Kustomize.found.missing == nil {
            for target in Kustomize.targets { try checkKeysReadable(try Manifests(origin: "kubectl kustomize \(target)", rendered: try Kustomize.found.render(target))) }
        }
        // The check can fail: the worker as it was (no fsGroup, defaultMode 0400) cannot read its key.
        let before: Object = ["securityContext": ["runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001] as Object,
                              "volumes": [["name": "curve", "secret": ["secretName": "dubfarm-worker-curve", "defaultMode": 0o400] as Object] as Object]]
        let container: Object = ["name": "worker", "volumeMounts": [["name": "curve", "mountPath": "/etc/dubfarm/curve"] as Object]]
        let file = try #require(secretFile("/etc/dubfarm/curve/worker.key", pod: before, container: container))
        let who = try #require(Identity(pod: before, container: container))
        #expect(!file.access.readable(by: who))
        if isRoot {
            let dir = try temporaryDirectory("keys-before")
            defer { try? FileManager.default.removeItem(at: dir) }
            chmod(dir.path, 0o755)
            #expect(try !readsAsUser(who, file.access, in: dir))
        }
    }

    // MARK: KEDA on the real schema

    @Test("KEDA: as its read-only role, the query asks for leased + ceil(pending / 4) + fine-tunes at a job's start, middle and end, and cannot write")
    func kedaQueryOnRealSchema() async throws {
        let m = try Manifests.base()
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

    // MARK: systemd cross-references

    @Test("systemd: the keys are credentials, and the unit's user reads them where the variables point (set up as systemd does, as root)")
    func systemdCredentials() throws {
        for unit in units {
            let text = try read("systemd/\(unit)")
            let credentials = Dictionary(directives(text, "LoadCredential").compactMap { line -> (String, String)? in
                let parts = line.split(separator: ":", maxSplits: 1).map(String.init)
                return parts.count == 2 ? (parts[0], parts[1]) : nil
            }, uniquingKeysWith: { a, _ in a })
            let env = assignments(directives(text, "Environment"))
            let secrets = env.filter { namesFileToRead($0.name) && !$0.name.hasPrefix("DUBFARM_SECURITY_AUTHORIZED_") }
            #expect(!secrets.isEmpty, "\(unit) names its key files")
            for (name, value) in secrets {
                #expect(value.hasPrefix("%d/") && credentials[String(value.dropFirst(3))] != nil,
                        "\(unit): \(name)=\(value) is a credential the unit loads (LoadCredential=)")
            }
            guard isRoot else { continue }
            // As systemd sets them up: sources 0600 root (as Deploy/README.md installs them),
            // copies 0400 owned by the unit's user in a directory of its own, $CREDENTIALS_DIRECTORY.
            let dir = try temporaryDirectory("credentials")
            defer { try? FileManager.default.removeItem(at: dir) }
            chmod(dir.path, 0o755)
            // DynamicUser= picks a uid of 61184–65519; User=dubfarm has some system uid: either
            // way one that owns nothing else here.
            let uid = directives(text, "DynamicUser").first == "yes" ? 61_999 : 64_999
            let who = Identity(uid: uid, gid: uid, groups: [uid])
            let credentialsDirectory = dir.appendingPathComponent("credentials")
            try FileManager.default.createDirectory(at: credentialsDirectory, withIntermediateDirectories: false)
            for (_, value) in secrets {
                let path = credentialsDirectory.appendingPathComponent(String(value.dropFirst(3)))
                try "secret\n".write(to: path, atomically: false, encoding: .utf8)
                #expect(chown(path.path, uid_t(uid), gid_t(uid)) == 0 && chmod(path.path, 0o400) == 0)
            }
            #expect(chown(credentialsDirectory.path, uid_t(uid), gid_t(uid)) == 0 && chmod(credentialsDirectory.path, 0o500) == 0)
            for (name, value) in secrets {
                #expect(try !readsAsUser(who, FileAccess(owner: 0, group: 0, mode: 0o600), in: dir),
                        "\(unit): a source file as installed, 0600 root, is not readable by the unit's user (so \(name) needs the credential)")
                let r = try run("/usr/bin/setpriv", ["--reuid=\(uid)", "--regid=\(uid)", "--clear-groups", "--", "/bin/cat",
                                                     value.replacingOccurrences(of: "%d", with: credentialsDirectory.path)])
                #expect(r.status == 0 && r.stdout == "secret\n", "\(unit): \(name) is read by the unit's user: \(r.stderr)")
            }
        }
    }

    @Test("systemd: the units run the right commands with the right variables, and the worker gets its grace plus a margin")
    func systemdReferences() throws {
        let coordinator = try read("systemd/dubfarm-coordinator.service")
        let worker = try read("systemd/dubfarm-worker@.service")
        #expect(directives(coordinator, "ExecStart").first?.contains("/dubfarm coordinator --config ") == true)
        #expect(directives(coordinator, "ExecStartPre").first?.contains("/dubfarm migrate") == true)
        let exec = try #require(directives(worker, "ExecStart").first)
        #expect(exec.contains("/dubfarm worker --connect ${WORKER_CONNECT}"))
        #expect(exec.contains("--grace ${WORKER_GRACE}") && exec.contains("--model ${WORKER_MODEL}"))
        // The defaults in the unit, then the environment file over them: in both, the stop
        // timeout outlasts the grace by the margin a partial result needs; the model is the image's.
        let timeout = try #require(directives(worker, "TimeoutStopSec").first.flatMap(Double.init))
        let defaults = Dictionary(assignments(directives(worker, "Environment")), uniquingKeysWith: { a, _ in a })
        let file = Dictionary(assignments(try read("systemd/worker.env").split(separator: "\n").map(String.init)), uniquingKeysWith: { a, _ in a })
        for (origin, env) in [("the unit", defaults), ("worker.env", file)] {
            let grace = try #require(env["WORKER_GRACE"].flatMap(Double.init), "\(origin) sets WORKER_GRACE")
            #expect(timeout >= grace + partialResultMargin, "\(origin): TimeoutStopSec \(timeout) ≥ WORKER_GRACE \(grace) + \(partialResultMargin)")
            #expect(env["WORKER_MODEL"] == imageModelDirectory, "\(origin): WORKER_MODEL is where Deploy/README.md installs the trained model")
        }
        // Known variables only, in the units and the environment files (commented examples too).
        for name in ["systemd/dubfarm-coordinator.service", "systemd/dubfarm-worker@.service", "systemd/coordinator.env", "systemd/worker.env"] {
            let text = try read(name)
            let lines = name.hasSuffix(".env") ? text.split(separator: "\n").map(String.init) : directives(text, "Environment")
            for (variable, _) in assignments(lines) where variable.hasPrefix("DUBFARM_") {
                #expect(isKnownVariable(variable), "\(name): \(variable)")
            }
        }
        let coordinatorVariables = assignments(directives(coordinator, "Environment")).map(\.name)
        #expect(coordinatorVariables.contains("DUBFARM_DATABASE_URL_FILE"))
        let env = Dictionary(assignments(try read("systemd/coordinator.env").split(separator: "\n").map(String.init)), uniquingKeysWith: { a, _ in a })
        #expect(env["DUBFARM_METRICS_LISTEN"].map { $0.hasPrefix("127.0.0.1:") } ?? true, "the dashboard stays on loopback by default")
    }

    // MARK: Compose, Dockerfile, names

    @Test("compose: workers reach the coordinator, read their keys as the image's user, name their weights and stop gracefully")
    func composeReferences() throws {
        let doc = try #require(try Yams.load(yaml: read("compose.yaml")) as? Object)
        let services = try #require(doc.object("services"))
        let worker = try #require(services.object("worker")), coordinator = try #require(services.object("coordinator"))
        #expect((worker.at("deploy.replicas") as? Int ?? 0) >= 1)
        let command = (worker["command"] as? [Any] ?? []).map { "\($0)" }
        #expect(argument(command, "--connect") == "tcp://coordinator:5555")
        #expect((coordinator.object("environment") ?? [:]).string("DUBFARM_COORDINATOR_WORK_ENDPOINT") == "tcp://*:5555")
        let grace = try #require(argument(command, "--grace").flatMap(Double.init))
        let stop = try #require(worker.string("stop_grace_period").flatMap { Double($0.replacingOccurrences(of: "s", with: "")) })
        #expect(stop >= grace + partialResultMargin, "docker waits for the grace and a partial result")
        #expect(argument(command, "--model") == imageModelDirectory, "workers name the image's trained weights")
        #expect(coordinator.at("build.target") as? String == "coordinator" && worker.at("build.target") as? String == "worker")
        let declared = Set(doc.object("secrets")?.keys.map { $0 } ?? [])
        for (name, s) in services {
            guard let s = s as? Object else { continue }
            let env = s.object("environment") ?? [:]
            for key in env.keys where key.hasPrefix("DUBFARM_") { #expect(isKnownVariable(key), "compose \(name): \(key)") }
            let refs = (s["secrets"] as? [Any] ?? []).map { ($0 as? Object) ?? ["source": "\($0)"] }
            for ref in refs { #expect(declared.contains(ref.string("source") ?? ""), "\(name) uses undeclared secret \(ref)") }
            guard name != "postgres" else { continue }
            #expect(s.string("user") == "10001:10001" && s["read_only"] as? Bool == true && (s["cap_drop"] as? [String]) == ["ALL"],
                    "compose \(name): the image's user, a read-only root, no capabilities")
            #expect(s.string("image")?.hasSuffix(":\(DubfarmVersion.current)") == true, "compose \(name): image tagged with the dubfarm version")
            // A secret file a variable names: readable by that user and no one else (long syntax;
            // Deploy/README.md has the operator chown the files to match, as compose bind-mounts them).
            for (variable, value) in env where secretFileVariables.contains(variable) {
                let target = "\(value)".replacingOccurrences(of: "/run/secrets/", with: "")
                let ref = try #require(refs.first { ($0.string("target") ?? $0.string("source")) == target }, "compose \(name): \(variable) is a secret")
                #expect(ref.string("uid") == "10001" && int(ref["mode"]).map { $0 & 0o077 == 0 && $0 & 0o400 != 0 } == true,
                        "compose \(name): \(variable) is 0400 for uid 10001")
            }
        }
        #expect(services.object("postgres")?.string("image")?.range(of: #":\d+\.\d+-"#, options: .regularExpression) != nil, "postgres is pinned to a minor release")
        let ports = (coordinator["ports"] as? [Any] ?? []).map { "\($0)" }
        #expect(ports.filter { $0.hasSuffix(":9464") }.allSatisfy { $0.hasPrefix("127.0.0.1:") }, "the dashboard is published on loopback only")
    }

    @Test("Dockerfile: pinned bases, the manifests' user, the trained weights where --model names them, runtime libraries only")
    func dockerfile() throws {
        let text = try read("docker/Dockerfile")
        let lines = text.split(separator: "\n").map(String.init)
        let froms = lines.filter { $0.hasPrefix("FROM ") }
        #expect(froms.contains { $0.contains("AS build") && $0.contains("${SWIFT_IMAGE}") })
        #expect(froms.contains("FROM ${DEBIAN_IMAGE} AS runtime"))
        #expect(froms.contains("FROM runtime AS coordinator") && froms.contains("FROM runtime AS worker"))
        // Base images pinned to a point release (a digest may follow), never a moving tag.
        for arg in ["SWIFT_IMAGE", "DEBIAN_IMAGE"] {
            let value = try #require(lines.first { $0.hasPrefix("ARG \(arg)=") }).split(separator: "=", maxSplits: 1)[1]
            #expect(value.range(of: #":\d+\.\d+(\.\d+)?-[a-z]+(@sha256:[0-9a-f]{64})?$"#, options: .regularExpression) != nil, "\(arg)=\(value) is pinned")
        }
        for lib in ["libzmq5", "libavformat59", "libavcodec59", "libavutil57", "libswscale6", "libswresample4", "libopenblas0", "libpq5",
                    "opencv-data", "libdlib-data"] {
            #expect(text.contains(lib), "the runtime installs \(lib)")
        }
        let runtime = text.components(separatedBy: "AS runtime")[1]
        #expect(!runtime.contains("-dev "), "no -dev packages at run time")
        #expect(text.contains("--static-swift-stdlib"))
        // The user the manifests and compose run.
        #expect(lines.contains("USER 10001:10001") && text.contains("--uid 10001 --gid 10001"))
        for pod in try Manifests.base().pods {
            #expect(int(pod.spec.at("securityContext.runAsUser")) == 10001 && int(pod.spec.at("securityContext.runAsGroup")) == 10001, "\(pod.name)")
        }
        // The trained weights, at the path the manifests name, from a directory that has them.
        let copy = try #require(lines.first { $0.hasPrefix("COPY models/") }).split(separator: " ").map(String.init)
        #expect(copy.count == 3 && copy[2] == imageModelDirectory)
        for file in ["manifest.json", "model.safetensors"] {
            #expect(FileManager.default.fileExists(atPath: repoRoot.appendingPathComponent(copy[1]).appendingPathComponent(file).path), "\(copy[1])/\(file)")
        }
        #expect(text.contains("DUBFARM_MODEL=\(imageModelDirectory)"))
    }

    @Test("every DUBFARM_* variable in Deploy/ is a configuration key or a worker/CLI variable")
    func environmentNames() throws {
        var seen: [(String, String)] = []
        for url in files(under: deployDir, [".env", ".service", "Dockerfile", ".yaml", ".yml", ".md"]) {
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
}
