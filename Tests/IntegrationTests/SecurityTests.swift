import DubfarmCore
import FarmClient
import FarmProtocol
import FarmSecurity
import Foundation
import LocalFarm
import Testing
import ZeroMQ

/// Key pairs for a CURVE test farm, in a directory of their own: the coordinator's, one admitted
/// worker and one admitted client (in the allow-list directories), and a stranger of each kind.
struct TestKeys {
    let dir: String
    let coordinator: CurveKeyPair
    let worker: CurveKeyPair, client: CurveKeyPair
    let strangerWorker: CurveKeyPair, strangerClient: CurveKeyPair

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("dubfarm-keys-\(UUID().uuidString.prefix(8))").path
        coordinator = try CurveKeyPair.generate()
        worker = try CurveKeyPair.generate()
        client = try CurveKeyPair.generate()
        strangerWorker = try CurveKeyPair.generate()
        strangerClient = try CurveKeyPair.generate()
        try KeyFiles.write(coordinator, name: "coordinator", directory: dir)
        try KeyFiles.write(worker, name: "w1", directory: dir + "/workers")
        try KeyFiles.write(client, name: "alice", directory: dir + "/clients")
        try KeyFiles.write(strangerWorker, name: "intruder", directory: dir + "/strangers")
        try KeyFiles.write(strangerClient, name: "mallory", directory: dir + "/strangers")
    }

    var settings: [String: String] {
        ["DUBFARM_SECURITY_SECRET_KEY_FILE": dir + "/coordinator.key_secret",
         "DUBFARM_SECURITY_AUTHORIZED_WORKERS": dir + "/workers",
         "DUBFARM_SECURITY_AUTHORIZED_CLIENTS": dir + "/clients"]
    }
    var serverKeyFile: String { dir + "/coordinator.key" }
    func workerArgs(_ secret: String) -> [String] { ["--key-file", secret, "--server-key", serverKeyFile] }

    func remove() { try? FileManager.default.removeItem(atPath: dir) }
}

extension Integration {
    @Suite("Security", .serialized, .enabled(if: haveMedia, "needs ../shared/media"))
    struct SecurityTests {
        @Test("CURVE: an authorized worker completes a job; an unknown worker key and a plaintext worker get no task; an unknown client is refused")
        func curveFarm() async throws {
            let keys = try TestKeys()
            defer { keys.remove() }
            let farm = try await TestFarm(settings: keys.settings)
            defer { farm.shutdown() }
            farm.clientCurve = (keys.coordinator.publicKey, keys.client)
            try farm.startCoordinator()
            try farm.startWorker("intruder", extra: keys.workerArgs(keys.dir + "/strangers/intruder.key_secret"))
            try farm.startWorker("plain")
            try farm.startWorker("good", extra: keys.workerArgs(keys.dir + "/workers/w1.key_secret"))
            try farm.waitFor("the authorized worker to connect", timeout: 60) {
                try farm.client().call(.workers, as: [WorkerView].self).map(\.name) == ["good"]
            }
            // Refusals are logged: by key on the coordinator (prefix and peer), and on the refused worker.
            try farm.waitFor("the coordinator to log the refused key", timeout: 60) {
                farm.tail("coordinator", lines: 400).contains("refused a worker")
            }
            let log = farm.tail("coordinator", lines: 400)
            #expect(log.contains(String(keys.strangerWorker.publicKey.prefix(8))), "the refused key's prefix is logged")
            #expect(!log.contains(keys.strangerWorker.publicKey), "only a prefix of the key is logged")
            #expect(log.contains("peer=127.0.0.1"))
            try farm.waitFor("the intruder to log its refusal", timeout: 60) {
                farm.tail("intruder", lines: 200).contains("refused this worker's key")
            }
            try farm.waitFor("the plaintext worker to log the failed handshake", timeout: 60) {
                farm.tail("plain", lines: 200).contains("security handshake with the coordinator failed")
            }

            let job = try farm.submit(media("speaker-c.mp4"), audio: media("dub-1.wav"))
            let d = try farm.wait(job: job)
            #expect(d.job.state == .done, "\(d.job.error ?? "")")
            #expect(d.segments.allSatisfy { $0.worker == "good" && $0.leases == 1 }, "\(d.segments.map { ($0.worker, $0.leases) })")
            #expect(try farm.client().call(.workers, as: [WorkerView].self).map(\.name) == ["good"])
            #expect(!farm.tail("intruder", lines: 400).contains("segment started"))
            #expect(!farm.tail("plain", lines: 400).contains("segment started"))

            // An unknown client key: a clear error at once (not a timeout), exit code 3 from the CLI.
            let stranger = try ControlClient(endpoint: farm.controlEndpoint, timeout: 60,
                                             curve: (keys.coordinator.publicKey, keys.strangerClient))
            #expect { try stranger.call(.jobs(JobsQuery())) } throws: { e in
                guard let e = e as? DubfarmError else { return false }
                return e.code == .unreachable && e.message.contains("refused this client's key") && e.message.contains("authorized_clients")
            }
            let cli = try dubfarm(["jobs", "--coordinator", farm.controlEndpoint, "--timeout", "60",
                                   "--key-file", keys.dir + "/strangers/mallory.key_secret", "--server-key", keys.serverKeyFile])
            #expect(cli.status == 3, "\(cli.err)")
            #expect(cli.err.contains("refused this client's key"), "\(cli.err)")
            try farm.waitFor("the coordinator to log the refused client", timeout: 30) {
                farm.tail("coordinator", lines: 400).contains("refused a client")
            }
            // A plaintext client is told the coordinator wants CURVE.
            let plain = try dubfarm(["jobs", "--coordinator", farm.controlEndpoint, "--timeout", "60"])
            #expect(plain.status == 3)
            #expect(plain.err.contains("requires CURVE"), "\(plain.err)")
            // The admitted client, from the command line, through the environment.
            let ok = try dubfarm(["jobs", "--coordinator", farm.controlEndpoint, "--json"],
                                 environment: ["DUBFARM_KEY_FILE": keys.dir + "/clients/alice.key_secret",
                                               "DUBFARM_SERVER_KEY": keys.coordinator.publicKey])
            #expect(ok.status == 0, "\(ok.err)")
            #expect(ok.out.contains("\"state\" : \"done\""))
        }

        @Test("a key added to the allow-list directory admits a new worker without a restart")
        func allowListReload() async throws {
            let keys = try TestKeys()
            defer { keys.remove() }
            let farm = try await TestFarm(settings: keys.settings)
            defer { farm.shutdown() }
            farm.clientCurve = (keys.coordinator.publicKey, keys.client)
            try farm.startCoordinator()
            try farm.startWorker("late", extra: keys.workerArgs(keys.dir + "/strangers/intruder.key_secret"))
            try farm.waitFor("the refusal", timeout: 60) { farm.tail("coordinator", lines: 400).contains("refused a worker") }
            #expect(try farm.client().call(.workers, as: [WorkerView].self).isEmpty)
            try FileManager.default.copyItem(atPath: keys.dir + "/strangers/intruder.key", toPath: keys.dir + "/workers/intruder.key")
            // libzmq retries the handshake (up to every 10 s); the next attempt is admitted.
            try farm.waitFor("the worker to be admitted", timeout: 90) {
                try farm.client().call(.workers, as: [WorkerView].self).map(\.name) == ["late"]
            }
        }

        @Test("keys generate and bad key files: clear errors naming the file, exit code 2")
        func keyCommands() async throws {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dubfarm-keygen-\(UUID().uuidString.prefix(8))").path
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let r = try dubfarm(["keys", "generate", "--out", dir, "--name", "render-7"])
            #expect(r.status == 0, "\(r.err)")
            var st = stat()
            #expect(stat(dir + "/render-7.key_secret", &st) == 0 && st.st_mode & 0o777 == 0o600)
            #expect(stat(dir + "/render-7.key", &st) == 0 && st.st_mode & 0o777 == 0o644)
            let again = try dubfarm(["keys", "generate", "--out", dir, "--name", "render-7"])
            #expect(again.status == 2)
            #expect(again.err.contains("already exists"))

            let missing = try dubfarm(["worker", "--connect", "tcp://127.0.0.1:1", "--stage", "passthrough",
                                       "--key-file", dir + "/nope.key_secret", "--server-key", dir + "/render-7.key"])
            #expect(missing.status == 2)
            #expect(missing.err.contains(dir + "/nope.key_secret") && missing.err.contains("does not exist"), "\(missing.err)")
            let publicAsSecret = try dubfarm(["jobs", "--coordinator", "tcp://127.0.0.1:1", "--key-file", dir + "/render-7.key",
                                              "--server-key", dir + "/render-7.key"])
            #expect(publicAsSecret.status == 2)
            #expect(publicAsSecret.err.contains("holds no secret-key"), "\(publicAsSecret.err)")
            let half = try dubfarm(["jobs", "--coordinator", "tcp://127.0.0.1:1", "--key-file", dir + "/render-7.key_secret"])
            #expect(half.status == 2)
            #expect(half.err.contains("needs --server-key"))

            // The coordinator's configuration: a bad key file is found by `config check`.
            let check = try dubfarm(["config", "check"], environment: [
                "DUBFARM_SECURITY_SECRET_KEY_FILE": dir + "/render-7.key", "DUBFARM_SECURITY_AUTHORIZED_WORKERS": dir,
                "DUBFARM_SECURITY_AUTHORIZED_CLIENTS": dir])
            #expect(check.status == 2)
            #expect(check.err.contains("security.secret_key_file") && check.err.contains("render-7.key"), "\(check.err)")
            let noList = try dubfarm(["config", "check"], environment: ["DUBFARM_SECURITY_SECRET_KEY_FILE": dir + "/render-7.key_secret"])
            #expect(noList.status == 2)
            #expect(noList.err.contains("security.authorized_workers"), "\(noList.err)")
            let good = try dubfarm(["config", "check"], environment: [
                "DUBFARM_SECURITY_SECRET_KEY_FILE": dir + "/render-7.key_secret", "DUBFARM_SECURITY_AUTHORIZED_WORKERS": dir,
                "DUBFARM_SECURITY_AUTHORIZED_CLIENTS": dir + "/render-7.key"])
            #expect(good.status == 0, "\(good.err)")
            #expect(good.out.contains("secret_key_file"))
        }
    }
}
