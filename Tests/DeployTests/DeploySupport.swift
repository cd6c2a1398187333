import DubfarmCore
import FarmConfig
import Foundation
import LocalFarm
import Testing
import Yams

// What Tests/DeployTests needs to read the deployment files, run their validators and check
// them against each other: see DeployTests.swift.

/// The repository root and its `Deploy/` directory.
let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let deployDir = repoRoot.appendingPathComponent("Deploy")
let kubernetesDir = deployDir.appendingPathComponent("kubernetes")
let validator = repoRoot.appendingPathComponent("Tests/DeployTests/Validators/validate.py").path
let venvPython = repoRoot.appendingPathComponent(".venv/bin/python").path
/// The Kubernetes version the manifests are validated for (and the Pod Security version they name).
let kubernetesVersion = "1.31.0"

func read(_ relative: String) throws -> String {
    try String(contentsOf: deployDir.appendingPathComponent(relative), encoding: .utf8)
}

/// Every file under `dir` whose name ends with one of `extensions`.
func files(under dir: URL, _ extensions: [String]) -> [URL] {
    let e = FileManager.default.enumerator(at: dir, includingPropertiesForKeys: nil)
    var out: [URL] = []
    while let u = e?.nextObject() as? URL {
        if extensions.contains(where: { u.lastPathComponent.hasSuffix($0) }) { out.append(u.standardizedFileURL) }
    }
    return out.sorted { $0.path < $1.path }
}

func relative(_ url: URL) -> String { String(url.standardizedFileURL.path.dropFirst(repoRoot.standardizedFileURL.path.count + 1)) }

/// Environment variables the deployment files may set besides the coordinator's configuration
/// keys (``ConfigKey/all``): the worker's and the CLI's own.
let workerAndClientVariables: Set<String> = ["DUBFARM_KEY_FILE", "DUBFARM_SERVER_KEY", "DUBFARM_COORDINATOR", "DUBFARM_MODEL", "DUBFARM_CACHE_DIR"]
func isKnownVariable(_ name: String) -> Bool {
    Set(ConfigKey.all.map(\.environmentVariable)).contains(name) || workerAndClientVariables.contains(name)
}
/// Variables whose value is secret material: the file they name must be readable by the process
/// and by no one else.
let secretFileVariables: Set<String> = ["DUBFARM_KEY_FILE", "DUBFARM_SECURITY_SECRET_KEY_FILE", "DUBFARM_DATABASE_URL_FILE"]
/// Variables that name a file the process must read.
func namesFileToRead(_ name: String) -> Bool {
    secretFileVariables.contains(name) || name == "DUBFARM_SERVER_KEY" || name.hasPrefix("DUBFARM_SECURITY_AUTHORIZED_")
}

/// The model directory the images carry (Deploy/docker/Dockerfile copies the repository's there).
let imageModelDirectory = "/usr/share/dubfarm/models/dubfarm-small"
/// The seconds a stopping worker needs beyond its --grace to flush and send a partial result.
let partialResultMargin = 15.0

typealias Object = [String: Any]

extension Dictionary where Key == String, Value == Any {
    func object(_ k: String) -> Object? { self[k] as? Object }
    func objects(_ k: String) -> [Object] { self[k] as? [Object] ?? [] }
    func string(_ k: String) -> String? { self[k].map { "\($0)" } }
    /// `a.b.c`
    func at(_ path: String) -> Any? {
        var cur: Any? = self
        for part in path.split(separator: ".") { cur = (cur as? Object)?[String(part)] }
        return cur
    }
}

func int(_ v: Any?) -> Int? { (v as? Int) ?? (v as? String).flatMap { Int($0) } }

/// The value after `flag` in an argument list.
func argument(_ args: [String], _ flag: String) -> String? { args.firstIndex(of: flag).flatMap { $0 + 1 < args.count ? args[$0 + 1] : nil } }

/// Runs a program; its status and output.
func run(_ executable: String, _ arguments: [String], directory: String? = nil, timeout: Double = 120) throws -> ProcessControl.Outcome {
    try ProcessControl.run(executable, arguments, directory: directory, timeout: timeout)
}

func which(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let p = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    return nil
}

func temporaryDirectory(_ tag: String) throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dubfarm-deploy-\(tag)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

// MARK: - Validators

/// Runs Validators/validate.py (with the repository's .venv, `make py-deps`) and records its
/// output as the failure when it refuses something.
func validate(_ arguments: [String], _ what: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    try #require(FileManager.default.isExecutableFile(atPath: venvPython),
                 "the validators run in .venv: make py-deps (tools/requirements-check.txt)", sourceLocation: sourceLocation)
    let r = try run(venvPython, [validator] + arguments)
    #expect(r.status == 0, "\(what) fails validation:\n\(r.stdout)\(r.stderr)", sourceLocation: sourceLocation)
    #expect(r.stdout.contains("OK "), "\(what): the validator checked nothing:\n\(r.stdout)\(r.stderr)", sourceLocation: sourceLocation)
}

/// kubectl with a kustomize that renders this repository's kustomizations (v4 or later: Debian 12's
/// kubernetes-client 1.20 has v2.0.3, which does not know `labels`, inline patches or `replicas`).
/// `$KUBECTL` names one, else kubectl on PATH.
struct Kustomize: Sendable {
    let kubectl: String?
    /// Why it cannot be used; nil when it can.
    let missing: String?

    static let found: Kustomize = {
        let kubectl = ProcessInfo.processInfo.environment["KUBECTL"] ?? which("kubectl")
        let howTo = "install kubectl 1.21 or later from the Kubernetes project (its apt repository or release binary), or point $KUBECTL at one"
        guard let kubectl else { return Kustomize(kubectl: nil, missing: "no kubectl on PATH to render the kustomizations: \(howTo)") }
        guard let r = try? ProcessControl.run(kubectl, ["version", "--client", "-o", "json"], timeout: 60), r.status == 0,
              let json = try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else {
            return Kustomize(kubectl: nil, missing: "\(kubectl) version --client failed: \(howTo)")
        }
        let client = (json["clientVersion"] as? [String: Any])?["gitVersion"] as? String ?? "?"
        guard let k = json["kustomizeVersion"] as? String,
              let major = Int(k.drop { !$0.isNumber }.prefix { $0.isNumber }), major >= 4 else {
            return Kustomize(kubectl: nil, missing: "\(kubectl) is \(client) with kustomize \(json["kustomizeVersion"] as? String ?? "older than v4 (none reported)"); the kustomizations need v4 or later: \(howTo)")
        }
        return Kustomize(kubectl: kubectl, missing: nil)
    }()

    /// The directories holding a kustomization: base and every overlay.
    static var targets: [String] {
        let overlays = (try? FileManager.default.contentsOfDirectory(atPath: kubernetesDir.appendingPathComponent("overlays").path)) ?? []
        return ["base"] + overlays.sorted().map { "overlays/\($0)" }
    }

    /// `kubectl kustomize` of `target` (relative to Deploy/kubernetes), in a copy of
    /// Deploy/kubernetes where every file a secretGenerator reads exists (the real ones are
    /// git-ignored), so the rendering is the one an operator gets.
    func render(_ target: String) throws -> String {
        let kubectl = try #require(kubectl)
        let copy = try temporaryDirectory("kustomize")
        defer { try? FileManager.default.removeItem(at: copy) }
        let tree = copy.appendingPathComponent("kubernetes")
        try FileManager.default.copyItem(at: kubernetesDir, to: tree)
        let kustomization = try #require(try Yams.load(yaml: String(contentsOf: tree.appendingPathComponent(target).appendingPathComponent("kustomization.yaml"),
                                                                      encoding: .utf8)) as? Object)
        for generator in kustomization.objects("secretGenerator") {
            for entry in (generator["files"] as? [String] ?? []) {
                let path = entry.split(separator: "=", maxSplits: 1).last.map(String.init) ?? entry
                let file = tree.appendingPathComponent(target).appendingPathComponent(path)
                try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
                if !FileManager.default.fileExists(atPath: file.path) { try "placeholder for the test\n".write(to: file, atomically: true, encoding: .utf8) }
            }
        }
        let r = try run(kubectl, ["kustomize", tree.appendingPathComponent(target).path])
        try #require(r.status == 0, "kubectl kustomize \(target) fails:\n\(r.stderr)")
        return r.stdout
    }
}

/// The files of Deploy/kubernetes by role, from the kustomizations: what a validator checks as a
/// whole manifest (resources, and standalone manifests that no kustomization lists), and what only
/// makes sense inside a rendering (patches, kustomize configurations).
struct KubernetesFiles {
    var kustomizations: [URL] = []
    var resources: [URL] = []
    var patches: [URL] = []
    var configurations: [URL] = []
    var standalone: [URL] = []

    init() throws {
        let all = files(under: kubernetesDir, [".yaml", ".yml"])
        kustomizations = all.filter { $0.lastPathComponent == "kustomization.yaml" }
        for k in kustomizations {
            let dir = k.deletingLastPathComponent()
            let doc = try #require(try Yams.load(yaml: String(contentsOf: k, encoding: .utf8)) as? Object, "\(relative(k))")
            for r in doc["resources"] as? [String] ?? [] {
                let u = dir.appendingPathComponent(r).standardizedFileURL
                var isDir: ObjCBool = false
                #expect(FileManager.default.fileExists(atPath: u.path, isDirectory: &isDir), "\(relative(k)): resource \(r) exists")
                if !isDir.boolValue { resources.append(u) }
            }
            for p in doc.objects("patches") { if let path = p.string("path") { patches.append(dir.appendingPathComponent(path).standardizedFileURL) } }
            for c in doc["configurations"] as? [String] ?? [] { configurations.append(dir.appendingPathComponent(c).standardizedFileURL) }
        }
        let known = Set((kustomizations + resources + patches + configurations).map(\.path))
        standalone = all.filter { !known.contains($0.path) }
    }

    /// Every whole manifest: validated as it is.
    var manifests: [URL] { resources + standalone }
}

// MARK: - Kubernetes documents

/// Kubernetes documents, by kind and name: the base's source files, or a rendering.
struct Manifests {
    let origin: String
    var docs: [(file: String, doc: Object)] = []

    init(origin: String, files: [URL]) throws {
        self.origin = origin
        for url in files {
            for case let doc as Object in try Yams.load_all(yaml: String(contentsOf: url, encoding: .utf8)) {
                docs.append((url.lastPathComponent, doc))
            }
        }
    }

    init(origin: String, rendered: String) throws {
        self.origin = origin
        for case let doc as Object in try Yams.load_all(yaml: rendered) { docs.append((origin, doc)) }
    }

    /// The base's own manifests (as in the repository, no rendering needed).
    static func base() throws -> Manifests {
        let k = try KubernetesFiles()
        return try Manifests(origin: "base (sources)", files: k.resources.filter { $0.path.contains("/kubernetes/base/") })
    }

    func all(_ kind: String) -> [Object] { docs.map(\.doc).filter { $0.string("kind") == kind } }
    func one(_ kind: String, _ name: String) -> Object? { all(kind).first { $0.at("metadata.name") as? String == name } }

    /// Every pod template (Deployments) and pod, with its owner's name.
    var pods: [(name: String, spec: Object, labels: Object)] {
        all("Deployment").compactMap { d in
            guard let spec = d.at("spec.template.spec") as? Object else { return nil }
            return ("\(d.at("metadata.name") ?? "?")", spec, d.at("spec.template.metadata.labels") as? Object ?? [:])
        } + all("Pod").compactMap { p in
            guard let spec = p.object("spec") else { return nil }
            return ("\(p.at("metadata.name") ?? "?")", spec, p.at("metadata.labels") as? Object ?? [:])
        }
    }
}

/// `labels` contains every pair of `selector`.
func matches(_ selector: Object?, _ labels: Object?) -> Bool {
    guard let selector, !selector.isEmpty, let labels else { return false }
    return selector.allSatisfy { k, v in labels.string(k) == "\(v)" }
}

func containers(_ pod: Object) -> [Object] { pod.objects("containers") + pod.objects("initContainers") }

// MARK: - Who can read a mounted secret file

/// The user a container runs as and its groups: runAsUser and runAsGroup (the container's
/// securityContext over the pod's), fsGroup and supplementalGroups.
struct Identity: CustomStringConvertible {
    var uid: Int
    var gid: Int
    var groups: Set<Int>
    var description: String { "uid \(uid) gid \(gid) groups \(groups.sorted())" }

    init(uid: Int, gid: Int, groups: Set<Int>) { self.uid = uid; self.gid = gid; self.groups = groups }

    init?(pod: Object, container: Object) {
        let ps = pod.object("securityContext") ?? [:], cs = container.object("securityContext") ?? [:]
        guard let uid = int(cs["runAsUser"]) ?? int(ps["runAsUser"]), let gid = int(cs["runAsGroup"]) ?? int(ps["runAsGroup"]) else { return nil }
        var groups: Set<Int> = [gid]
        if let fs = int(ps["fsGroup"]) { groups.insert(fs) }
        for g in ps["supplementalGroups"] as? [Any] ?? [] { if let g = int(g) { groups.insert(g) } }
        self.init(uid: uid, gid: gid, groups: groups)
    }
}

/// A file as it appears in a container: owner, group, mode.
struct FileAccess: CustomStringConvertible {
    var owner: Int
    var group: Int
    var mode: Int
    var description: String { "\(owner):\(group) \(String(mode, radix: 8))" }

    /// POSIX: the owner's bits for the owner, else the group's for a member, else the others'.
    func readable(by who: Identity) -> Bool {
        if who.uid == owner { return mode & 0o400 != 0 }
        if who.groups.contains(group) { return mode & 0o040 != 0 }
        return mode & 0o004 != 0
    }
}

/// A file of a secret volume mounted into `container`, at `path`: the secret, its key, and the
/// owner and mode kubelet gives it (root-owned; the item's mode, else defaultMode, else 0644; with
/// fsGroup, group fsGroup and kubelet adds 0440: pkg/volume SetVolumeOwnership). nil when `path`
/// is not in a secret volume.
func secretFile(_ path: String, pod: Object, container: Object) -> (secret: String, key: String, access: FileAccess)? {
    let volumes = Dictionary(pod.objects("volumes").compactMap { v in v.string("name").map { ($0, v) } }, uniquingKeysWith: { a, _ in a })
    for m in container.objects("volumeMounts") {
        guard let mountPath = m.string("mountPath"), path.hasPrefix(mountPath + "/"),
              let volume = volumes[m.string("name") ?? ""], let secret = volume.object("secret"),
              let name = secret.string("secretName") else { continue }
        let file = String(path.dropFirst(mountPath.count + 1))
        let item = secret.objects("items").first { $0.string("path") == file }
        if !secret.objects("items").isEmpty && item == nil { continue }
        var mode = int(item?["mode"]) ?? int(secret["defaultMode"]) ?? 0o644
        var group = 0
        if let fs = int(pod.at("securityContext.fsGroup")) { group = fs; mode |= 0o440 }
        return (name, item?.string("key") ?? file, FileAccess(owner: 0, group: group, mode: mode))
    }
    return nil
}

/// Reads `file` as `who` (setpriv), after giving it `access`: whether that user can.
func readsAsUser(_ who: Identity, _ access: FileAccess, in dir: URL) throws -> Bool {
    let file = dir.appendingPathComponent("probe-\(UUID().uuidString)")
    try "secret\n".write(to: file, atomically: false, encoding: .utf8)
    defer { try? FileManager.default.removeItem(at: file) }
    #expect(chown(file.path, uid_t(access.owner), gid_t(access.group)) == 0 && chmod(file.path, mode_t(access.mode)) == 0)
    let groups = who.groups.subtracting([who.gid]).sorted().map(String.init)
    let r = try run("/usr/bin/setpriv", ["--reuid=\(who.uid)", "--regid=\(who.gid)"] + (groups.isEmpty ? ["--clear-groups"] : ["--groups=\(groups.joined(separator: ","))"])
                    + ["--", "/bin/cat", file.path])
    return r.status == 0 && r.stdout == "secret\n"
}

let isRoot = getuid() == 0

// MARK: - The checks no validator makes

/// Cross-references within one set of Kubernetes documents (the base's sources or a rendering).
func checkKubernetesReferences(_ m: Manifests) throws {
    let o = m.origin
    let coordinator = try #require(m.one("Deployment", "dubfarm-coordinator"), "\(o): the coordinator Deployment")
    let worker = try #require(m.one("Deployment", "dubfarm-worker"), "\(o): the worker Deployment")
    let coordinatorLabels = coordinator.at("spec.template.metadata.labels") as? Object
    let workerLabels = worker.at("spec.template.metadata.labels") as? Object
    for d in [coordinator, worker] {
        #expect(matches(d.at("spec.selector.matchLabels") as? Object, d.at("spec.template.metadata.labels") as? Object),
                "\(o): \(d.at("metadata.name")!): selector matches the pod labels")
    }
    for (_, doc) in m.docs where doc.string("kind") != "Namespace" {
        #expect(doc.at("metadata.namespace") as? String == "dubfarm", "\(o): \(doc.string("kind")!)/\(doc.at("metadata.name") ?? "?") is in namespace dubfarm")
    }

    // The coordinator's ports: the Service targets them; the work port is the one workers dial.
    let cc = try #require(coordinator.at("spec.template.spec.containers") as? [Object]).first { $0.string("name") == "coordinator" }
    let ports = Dictionary((cc?.objects("ports") ?? []).map { ($0.string("name") ?? "", int($0["containerPort"]) ?? 0) }, uniquingKeysWith: { a, _ in a })
    let workPort = try #require(ports["work"], "\(o): the coordinator names its work port")
    let service = try #require(m.one("Service", "dubfarm-coordinator"), "\(o): the coordinator Service")
    #expect(matches(service.at("spec.selector") as? Object, coordinatorLabels), "\(o): the Service selects the coordinator")
    for p in service.at("spec.ports") as? [Object] ?? [] {
        #expect(ports[p.string("targetPort") ?? ""] != nil, "\(o): Service port \(p.string("name") ?? "?") targets a named container port")
    }
    let serviceWork = (service.at("spec.ports") as? [Object] ?? []).first { $0.string("targetPort") == "work" }
    let wc = try #require((worker.at("spec.template.spec.containers") as? [Object])?.first)
    let args = (wc["args"] as? [Any] ?? []).map { "\($0)" }
    #expect(argument(args, "--connect") == "tcp://dubfarm-coordinator:\(int(serviceWork?["port"]) ?? -1)",
            "\(o): workers connect to the coordinator Service's work port")

    // The coordinator's probes: HTTP /healthz on the metrics port, which it serves on every
    // interface of the pod; nobody probes the CURVE ports.
    let env = Dictionary((cc?.objects("env") ?? []).compactMap { e in e.string("name").map { ($0, e.string("value") ?? "") } }, uniquingKeysWith: { a, _ in a })
    #expect(env["DUBFARM_METRICS_LISTEN"] == "0.0.0.0:\(ports["metrics"] ?? -1)", "\(o): metrics.listen is the pod's metrics port")
    for probe in ["readinessProbe", "livenessProbe"] {
        #expect(cc?.at("\(probe).httpGet.path") as? String == "/healthz" && cc?.at("\(probe).httpGet.port") as? String == "metrics",
                "\(o): the coordinator's \(probe) is GET /healthz on the metrics port")
    }
    for pod in m.pods {
        for c in containers(pod.spec) {
            for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                #expect(c.at("\(probe).tcpSocket") == nil, "\(o): \(pod.name)/\(c.string("name") ?? "?"): no TCP probe (the ports speak CURVE)")
            }
        }
    }

    // The PodDisruptionBudget covers the workers.
    let pdb = try #require(m.one("PodDisruptionBudget", "dubfarm-worker"), "\(o): the workers' PodDisruptionBudget")
    #expect(matches(pdb.at("spec.selector.matchLabels") as? Object, workerLabels), "\(o): the PodDisruptionBudget selects the workers")

    // A stopping worker gets its grace plus the time to send a partial result.
    let grace = try #require(argument(args, "--grace").flatMap(Double.init), "\(o): workers run with --grace")
    let termination = try #require(int(worker.at("spec.template.spec.terminationGracePeriodSeconds")), "\(o): terminationGracePeriodSeconds")
    #expect(Double(termination) >= grace + partialResultMargin, "\(o): terminationGracePeriodSeconds \(termination) ≥ --grace \(grace) + \(partialResultMargin)")

    // --model names weights the pod has: the image's, or a mounted volume's.
    let model = try #require(argument(args, "--model"), "\(o): workers name their weights (--model)")
    let mounts = wc.objects("volumeMounts").compactMap { $0.string("mountPath") }
    #expect(model == imageModelDirectory || mounts.contains { model.hasPrefix($0 + "/") },
            "\(o): --model \(model) is the image's model or in a mounted volume")

    // Environment: configuration keys only; what the worker and coordinator write is writable.
    for pod in m.pods {
        let writable = Set((pod.spec.objects("volumes")).filter { $0["emptyDir"] != nil || $0["persistentVolumeClaim"] != nil }.compactMap { $0.string("name") })
        for c in containers(pod.spec) {
            let writableMounts = c.objects("volumeMounts").filter { writable.contains($0.string("name") ?? "") && ($0["readOnly"] as? Bool) != true }
                .compactMap { $0.string("mountPath") }
            for e in c.objects("env") {
                let name = e.string("name") ?? ""
                #expect(!name.hasPrefix("DUBFARM_") || isKnownVariable(name), "\(o): \(pod.name): \(name) is not a configuration key")
                if ["DUBFARM_MEDIA_STORE", "DUBFARM_CACHE_DIR"].contains(name), let path = e.string("value") {
                    #expect(writableMounts.contains(path), "\(o): \(pod.name): \(name)=\(path) is a writable volume")
                }
            }
            // The coordinator and the workers write temporary files (the migration writes nothing).
            if c.at("securityContext.readOnlyRootFilesystem") as? Bool == true, c.string("name") != "migrate" {
                #expect(writableMounts.contains("/tmp"), "\(o): \(pod.name)/\(c.string("name") ?? "?"): /tmp is writable")
            }
        }
    }

    // Images: pinned to the dubfarm version, never :latest.
    for pod in m.pods {
        for c in containers(pod.spec) {
            let image = c.string("image") ?? ""
            #expect(image.contains("@sha256:") || image.hasSuffix(":\(DubfarmVersion.current)"),
                    "\(o): \(pod.name): image \(image) is pinned to dubfarm \(DubfarmVersion.current) (or a digest)")
            #expect(!image.hasSuffix(":latest"))
        }
    }

    // KEDA scales the worker Deployment, which leaves the count to it, with credentials that exist.
    let so = try #require(m.one("ScaledObject", "dubfarm-worker"), "\(o): the ScaledObject")
    #expect(so.at("spec.scaleTargetRef.name") as? String == "dubfarm-worker" && so.at("spec.scaleTargetRef.kind") as? String == "Deployment")
    #expect(worker.at("spec.replicas") == nil, "\(o): KEDA owns the worker count")
    let min = int(so.at("spec.minReplicaCount")) ?? 0, max = try #require(int(so.at("spec.maxReplicaCount")))
    #expect(min >= 0 && max >= Swift.max(min, 1), "\(o): \(min) ≤ replicas ≤ \(max)")
    let trigger = try #require((so.at("spec.triggers") as? [Object])?.first)
    #expect(trigger.at("metadata.targetQueryValue") as? String == "1", "\(o): one worker per unit the query returns")
    let auth = try #require(m.one("TriggerAuthentication", trigger.at("authenticationRef.name") as? String ?? ""),
                            "\(o): the trigger's TriggerAuthentication exists")
    #expect((auth.at("spec.secretTargetRef") as? [Object])?.first?.string("parameter") == "connection")

    try checkNetworkPolicy(m, workPort: workPort, metricsPort: ports["metrics"], coordinatorLabels: coordinatorLabels, workerLabels: workerLabels)
}

/// Every Secret the pods and KEDA read, with the keys they read: (secret, key) pairs.
func secretReferences(_ m: Manifests) -> [(user: String, secret: String, key: String)] {
    var out: [(String, String, String)] = []
    for pod in m.pods {
        for c in containers(pod.spec) {
            for e in c.objects("env") {
                if let ref = e.at("valueFrom.secretKeyRef") as? Object { out.append((pod.name, ref.string("name") ?? "", ref.string("key") ?? "")) }
                if let name = e.string("name"), namesFileToRead(name), let path = e.string("value"),
                   let file = secretFile(path, pod: pod.spec, container: c) {
                    out.append(("\(pod.name) \(name)", file.secret, file.key))
                }
            }
        }
    }
    for auth in m.all("TriggerAuthentication") {
        for ref in auth.at("spec.secretTargetRef") as? [Object] ?? [] {
            out.append(("TriggerAuthentication \(auth.at("metadata.name") ?? "?")", ref.string("name") ?? "", ref.string("key") ?? ""))
        }
    }
    return out
}

func checkNetworkPolicy(_ m: Manifests, workPort: Int, metricsPort: Int?, coordinatorLabels: Object?, workerLabels: Object?) throws {
    let o = m.origin
    let policies = m.all("NetworkPolicy")
    #expect(policies.contains { ($0.at("spec.podSelector") as? Object)?.isEmpty == true
        && Set(($0.at("spec.policyTypes") as? [String]) ?? []) == ["Ingress", "Egress"] && $0.at("spec.ingress") == nil && $0.at("spec.egress") == nil },
            "\(o): a default-deny NetworkPolicy for every pod, both directions")
    for p in policies {
        let selector = p.at("spec.podSelector.matchLabels") as? Object
        if let selector, !selector.isEmpty {
            #expect(m.pods.contains { matches(selector, $0.labels) }, "\(o): NetworkPolicy \(p.at("metadata.name") ?? "?") selects a pod")
        }
    }
    func ports(_ rule: Object) -> Set<Int> { Set(rule.objects("ports").compactMap { int($0["port"]) }) }
    func fromPods(_ rule: Object, _ key: String, _ labels: Object?) -> Bool {
        rule.objects(key).contains { $0["namespaceSelector"] == nil && matches($0.at("podSelector.matchLabels") as? Object, labels) }
    }
    let workerPolicy = try #require(policies.first { matches($0.at("spec.podSelector.matchLabels") as? Object, workerLabels) }?.object("spec"),
                                    "\(o): the workers' NetworkPolicy")
    #expect(workerPolicy.objects("egress").contains { fromPods($0, "to", coordinatorLabels) && ports($0) == [workPort] },
            "\(o): workers may reach the coordinator's work port \(workPort), and only that port of it")
    #expect(workerPolicy.objects("egress").contains { ports($0) == [53] }, "\(o): workers may reach DNS")
    #expect(workerPolicy.objects("ingress").isEmpty, "\(o): nothing reaches a worker")
    let coordinatorPolicy = try #require(policies.first { matches($0.at("spec.podSelector.matchLabels") as? Object, coordinatorLabels) }?.object("spec"),
                                         "\(o): the coordinator's NetworkPolicy")
    #expect(coordinatorPolicy.objects("ingress").contains { fromPods($0, "from", workerLabels) && ports($0) == [workPort] },
            "\(o): workers reach the coordinator's work port")
    if let metricsPort {
        for rule in coordinatorPolicy.objects("ingress") where ports(rule).contains(metricsPort) || ports(rule).isEmpty {
            let from = rule.objects("from")
            #expect(!from.isEmpty && from.allSatisfy { $0["namespaceSelector"] != nil && $0["ipBlock"] == nil },
                    "\(o): the metrics port (no authentication) is open only to a selected namespace")
        }
    }
    #expect(coordinatorPolicy.objects("egress").contains { ports($0) == [5432] }, "\(o): the coordinator may reach PostgreSQL")
}

/// The "restricted" Pod Security Standard (v1.31), checked on every pod, and a read-only root.
func checkRestricted(_ m: Manifests) {
    let o = m.origin
    let allowedVolumes: Set<String> = ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"]
    #expect(!m.pods.isEmpty)
    for pod in m.pods {
        let ps = pod.spec.object("securityContext") ?? [:]
        for key in ["hostNetwork", "hostPID", "hostIPC"] { #expect(pod.spec[key] as? Bool != true, "\(o): \(pod.name): \(key)") }
        for v in pod.spec.objects("volumes") {
            #expect(Set(v.keys).subtracting(["name"]).isSubset(of: allowedVolumes), "\(o): \(pod.name): volume \(v.string("name") ?? "?") is of a restricted type")
        }
        #expect(pod.spec["automountServiceAccountToken"] as? Bool == false, "\(o): \(pod.name): no service account token (it never calls the API)")
        for c in containers(pod.spec) {
            let cs = c.object("securityContext") ?? [:], what = "\(o): \(pod.name)/\(c.string("name") ?? "?")"
            #expect((cs["runAsNonRoot"] as? Bool ?? ps["runAsNonRoot"] as? Bool) == true, "\(what): runAsNonRoot")
            #expect((int(cs["runAsUser"]) ?? int(ps["runAsUser"]) ?? 0) != 0, "\(what): a non-zero runAsUser")
            #expect(cs["allowPrivilegeEscalation"] as? Bool == false, "\(what): allowPrivilegeEscalation false")
            #expect(cs["privileged"] as? Bool != true, "\(what): not privileged")
            #expect((cs.at("capabilities.drop") as? [String] ?? []).contains("ALL"), "\(what): drops ALL capabilities")
            #expect((cs.at("capabilities.add") as? [String] ?? []).allSatisfy { $0 == "NET_BIND_SERVICE" }, "\(what): adds no capability")
            let seccomp = (cs.at("seccompProfile.type") ?? ps.at("seccompProfile.type")) as? String
            #expect(seccomp == "RuntimeDefault" || seccomp == "Localhost", "\(what): seccompProfile RuntimeDefault")
            #expect(cs["readOnlyRootFilesystem"] as? Bool == true, "\(what): read-only root filesystem")
            #expect(c.objects("ports").allSatisfy { $0["hostPort"] == nil }, "\(what): no hostPort")
        }
    }
    if let ns = m.one("Namespace", "dubfarm") {
        let labels = ns.at("metadata.labels") as? Object ?? [:]
        #expect(labels.string("pod-security.kubernetes.io/enforce") == "restricted", "\(o): the namespace enforces restricted")
        let minor = kubernetesVersion.split(separator: ".").prefix(2).joined(separator: ".")
        #expect(labels.string("pod-security.kubernetes.io/enforce-version") == "v\(minor)", "\(o): …at the version the files are validated for")
    }
}

/// Every file a pod reads its secrets from is readable by the user it runs as, and secret
/// material by no one else (the arithmetic of kubelet's modes; as root, also by reading it).
func checkKeysReadable(_ m: Manifests) throws {
    let o = m.origin
    var checked = 0
    let dir = try temporaryDirectory("keys")
    defer { try? FileManager.default.removeItem(at: dir) }
    chmod(dir.path, 0o755)
    for pod in m.pods {
        for c in containers(pod.spec) {
            for e in c.objects("env") {
                guard let name = e.string("name"), namesFileToRead(name), let path = e.string("value"), path.hasPrefix("/") else { continue }
                let what = "\(o): \(pod.name)/\(c.string("name") ?? "?") \(name)=\(path)"
                let file = try #require(secretFile(path, pod: pod.spec, container: c), "\(what) is in a mounted secret")
                let who = try #require(Identity(pod: pod.spec, container: c), "\(what): the pod sets runAsUser and runAsGroup")
                #expect(file.access.readable(by: who), "\(what): \(file.access) cannot be read by \(who)")
                if secretFileVariables.contains(name) {
                    #expect(file.access.mode & 0o007 == 0, "\(what): \(file.access) is readable by others")
                }
                if isRoot { #expect(try readsAsUser(who, file.access, in: dir), "\(what): \(who) fails to read a file \(file.access)") }
                checked += 1
            }
        }
    }
    #expect(checked >= 3, "\(o): the worker's two key files and the coordinator's were checked")
}

// MARK: - systemd

/// The values of `Key=` lines of a unit file (comments skipped). A lookup for the cross-checks;
/// the syntax is systemd-analyze's to judge.
func directives(_ unit: String, _ key: String) -> [String] {
    unit.split(separator: "\n").compactMap { line in
        let l = line.trimmingCharacters(in: .whitespaces)
        return l.hasPrefix(key + "=") ? String(l.dropFirst(key.count + 1)) : nil
    }
}

/// `NAME=value` pairs of a unit's Environment= lines, or of an environment file's lines
/// (commented-out examples too, so they are checked as well).
func assignments(_ lines: [String]) -> [(name: String, value: String)] {
    lines.flatMap { $0.split(separator: " ") }.compactMap { word in
        var w = word.trimmingCharacters(in: .whitespaces)
        if w.hasPrefix("#") { w = String(w.dropFirst()) }
        guard let eq = w.firstIndex(of: "="), !w[..<eq].isEmpty, w[..<eq].allSatisfy({ $0.isUppercase || $0.isNumber || $0 == "_" }) else { return nil }
        return (String(w[..<eq]), String(w[w.index(after: eq)...]))
    }
}

let units = ["dubfarm-coordinator.service", "dubfarm-worker@.service"]
let systemdAnalyze = which("systemd-analyze")

/// A root directory for `systemd-analyze verify --root`: the units under test, this machine's
/// system units (targets they order against), and an executable stub where the units expect
/// dubfarm, so verify judges the units and not this machine's install.
func systemdRoot() throws -> URL {
    let root = try temporaryDirectory("systemd")
    let fm = FileManager.default
    let system = ["/usr/lib/systemd/system", "/lib/systemd/system"].first { fm.fileExists(atPath: $0) }
    try fm.createDirectory(at: root.appendingPathComponent("usr/lib/systemd"), withIntermediateDirectories: true)
    if let system { try fm.copyItem(atPath: system, toPath: root.appendingPathComponent("usr/lib/systemd/system").path) }
    try fm.createDirectory(at: root.appendingPathComponent("etc/systemd/system"), withIntermediateDirectories: true)
    for unit in units {
        try fm.copyItem(at: deployDir.appendingPathComponent("systemd/\(unit)"), to: root.appendingPathComponent("etc/systemd/system/\(unit)"))
    }
    let binaries = Set(units.flatMap { u in
        ((try? read("systemd/\(u)")).map { directives($0, "ExecStart") + directives($0, "ExecStartPre") } ?? []).compactMap { $0.split(separator: " ").first.map(String.init) }
    })
    for b in binaries {
        let stub = root.appendingPathComponent(String(b.dropFirst()))
        try fm.createDirectory(at: stub.deletingLastPathComponent(), withIntermediateDirectories: true)
        try "#!/bin/sh\nexit 0\n".write(to: stub, atomically: true, encoding: .utf8)
        chmod(stub.path, 0o755)
    }
    return root
}
