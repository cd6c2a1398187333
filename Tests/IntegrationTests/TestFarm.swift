import DubfarmCore
import FarmClient
import FarmProtocol
import FarmStore
import FarmTestSupport
import Foundation
import LocalFarm
import MediaPipeline
import Testing
import ZeroMQ

/// The shared test media (`TestMedia`, FarmTestSupport).
func media(_ name: String) -> String { TestMedia.path(name) }
var haveMedia: Bool { TestMedia.available }

/// The `dubfarm` executable built next to this test binary.
let dubfarmExecutable: String = {
    let me = URL(fileURLWithPath: ProcessControl.currentExecutable)
    var dir = me.deletingLastPathComponent()
    // Swift Testing may run from inside the .xctest bundle directory.
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("dubfarm")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate.path }
        dir = dir.deletingLastPathComponent()
    }
    return me.deletingLastPathComponent().appendingPathComponent("dubfarm").path
}()

/// All integration suites, one at a time: each starts real processes, and running them side by
/// side on a 2-core machine would starve heartbeats and make timing-based checks flaky.
@Suite("Integration", .serialized) struct Integration {}

struct TestTimeout: Error, CustomStringConvertible {
    let description: String
}

/// A real farm for one test: a fresh database in the shared test cluster, a media store in a
/// temporary directory, a coordinator process and worker processes, all on loopback.
final class TestFarm: @unchecked Sendable {
    let db: TestDatabase
    let dir: URL
    let workPort: Int
    let controlPort: Int
    /// The coordinator's metrics and dashboard port (`metrics.listen`).
    let metricsPort: Int
    var coordinatorPID: Int32 = 0
    var workers: [String: Int32] = [:]
    let heartbeat = 0.2
    let liveness = 10
    var environment: [String: String]
    /// CURVE keys the test's own control clients use (a farm with `security.*` set).
    var clientCurve: (serverKey: String, keys: CurveKeyPair)?

    var workEndpoint: String { "tcp://127.0.0.1:\(workPort)" }
    var controlEndpoint: String { "tcp://127.0.0.1:\(controlPort)" }
    /// The metrics and dashboard server's base URL.
    var metricsURL: String { "http://127.0.0.1:\(metricsPort)" }
    var store: MediaStoreView { MediaStoreView(root: dir.appendingPathComponent("store")) }

    /// - Parameter database: the farm's database; a fresh one in the shared test cluster when nil.
    init(settings: [String: String] = [:], database: TestDatabase? = nil) async throws {
        if let database { db = database } else { db = try await TestDatabase.create() }
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("dubfarm-it-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        workPort = ProcessControl.freePort()
        controlPort = ProcessControl.freePort()
        metricsPort = ProcessControl.freePort()
        var env = ProcessInfo.processInfo.environment
        env["DUBFARM_DATABASE_URL"] = db.url
        env["DUBFARM_MEDIA_STORE"] = dir.appendingPathComponent("store").path
        env["DUBFARM_COORDINATOR_WORK_ENDPOINT"] = "tcp://127.0.0.1:\(workPort)"
        env["DUBFARM_COORDINATOR_CONTROL_ENDPOINT"] = "tcp://127.0.0.1:\(controlPort)"
        env["DUBFARM_METRICS_LISTEN"] = "127.0.0.1:\(metricsPort)"
        env["DUBFARM_WORKERS_HEARTBEAT_INTERVAL"] = String(heartbeat)
        env["DUBFARM_WORKERS_LIVENESS"] = String(liveness)
        env["DUBFARM_WORKERS_LEASE_SECONDS"] = "6"
        env["DUBFARM_RETRY_BACKOFF_BASE"] = "0.2"
        env["DUBFARM_RETRY_BACKOFF_MAX"] = "1"
        env["DUBFARM_OUTPUT_PRESET"] = "ultrafast"
        env["DUBFARM_LOGGING_LEVEL"] = "debug"
        // Jobs submitted without a stage keep their old meaning here; dub tests name their stage.
        env["DUBFARM_COORDINATOR_DEFAULT_STAGE"] = "passthrough"
        for (k, v) in settings { env[k] = v }
        environment = env
    }

    func log(_ name: String) -> URL { dir.appendingPathComponent("\(name).log") }

    /// Starts (or restarts) the coordinator and waits until its endpoints are bound.
    func startCoordinator() throws {
        let ready = dir.appendingPathComponent("ready.json")
        try? FileManager.default.removeItem(at: ready)
        coordinatorPID = try ProcessControl.spawnDetached(dubfarmExecutable, ["coordinator", "--ready-file", ready.path],
                                                          log: log("coordinator"), environment: environment)
        try waitFor("coordinator ready", timeout: 30) {
            guard ProcessControl.isAlive(coordinatorPID) else { throw TestTimeout(description: "coordinator exited:\n\(tail("coordinator"))") }
            return FileManager.default.fileExists(atPath: ready.path)
        }
    }

    @discardableResult
    func startWorker(_ name: String, stage: String = "passthrough", extra: [String] = []) throws -> Int32 {
        let pid = try ProcessControl.spawnDetached(
            dubfarmExecutable,
            ["worker", "--connect", workEndpoint, "--name", name, "--stage", stage, "--heartbeat", String(heartbeat),
             "--liveness", String(liveness), "--log-level", "debug"] + extra,
            log: log(name), environment: environment)
        workers[name] = pid
        return pid
    }

    /// A coordinator and `n` passthrough workers, all connected.
    static func start(workers n: Int, stage: String = "passthrough", settings: [String: String] = [:]) async throws -> TestFarm {
        let farm = try await TestFarm(settings: settings)
        try farm.startCoordinator()
        for i in 1...max(n, 1) where n > 0 { try farm.startWorker("w\(i)", stage: stage) }
        if n > 0 {
            try farm.waitForWorkers(n, "\(n) workers connected", timeout: 30)
        }
        return farm
    }

    func client(timeout: Double = 10) throws -> ControlClient {
        try ControlClient(endpoint: controlEndpoint, timeout: timeout, curve: clientCurve)
    }

    func submit(_ video: String, audio: String, face: String? = nil, priority: Int = 0, stage: String? = nil,
                personalise: PersonaliseRequest? = nil) throws -> Int64 {
        let c = try client(timeout: 60)
        let v = try c.upload(path: video), a = try c.upload(path: audio)
        let f = try face.map { try c.upload(path: $0) }
        let name = { (p: String) in URL(fileURLWithPath: p).lastPathComponent }
        return try c.call(.submit(SubmitSpec(video: v, audio: a, face: f, videoName: name(video), audioName: name(audio),
                                             faceName: face.map(name), priority: priority, stage: stage, personalise: personalise)),
                          as: JobView.self).id
    }

    func status(_ job: Int64) throws -> JobDetail { try client().call(.status(job: job), as: JobDetail.self) }

    /// Waits until the job reaches a terminal state (or `states`), returning its detail.
    @discardableResult
    func wait(job: Int64, for states: Set<JobState> = [.done, .failed, .cancelled], timeout: Double = 180) throws -> JobDetail {
        var last: JobDetail?
        try waitFor("job \(job) to reach \(states)", timeout: timeout) {
            last = try status(job)
            return states.contains(last!.job.state)
        }
        return last!
    }

    /// Waits until the coordinator lists `count` workers (`what` names them in a timeout).
    func waitForWorkers(_ count: Int, _ what: String, timeout: Double) throws {
        try waitFor(what, timeout: timeout) { try client().call(.workers, as: [WorkerView].self).count == count }
    }

    /// Polls `condition` every 50 ms until it holds or `timeout` passes.
    func waitFor(_ what: String, timeout: Double, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        var lastError: Error?
        while Date() < deadline {
            do {
                if try condition() { return }
            } catch let e as TestTimeout { throw e } catch { lastError = error }
            usleep(50_000)
        }
        throw TestTimeout(description: "timed out after \(timeout) s waiting for \(what)" + (lastError.map { " (last error: \($0))" } ?? "")
                          + "\n--- coordinator log ---\n\(tail("coordinator", lines: 40))")
    }

    func tail(_ name: String, lines: Int = 20) -> String {
        ((try? String(contentsOf: log(name), encoding: .utf8)) ?? "").split(separator: "\n").suffix(lines).joined(separator: "\n")
    }

    func kill(worker name: String, signal: Int32 = SIGKILL) {
        guard let pid = workers[name] else { return }
        Glibc.kill(pid, signal)
        if signal == SIGKILL || signal == SIGTERM {
            usleep(50_000)
            ProcessControl.reap(pid)
        }
    }

    func killCoordinator() {
        Glibc.kill(coordinatorPID, SIGKILL)
        usleep(100_000)
        ProcessControl.reap(coordinatorPID)
    }

    func shutdown() {
        for pid in workers.values { Glibc.kill(pid, SIGKILL) }
        Glibc.kill(coordinatorPID, SIGKILL)
        for pid in workers.values + [coordinatorPID] { usleep(10_000); ProcessControl.reap(pid) }
        db.drop()
        if ProcessInfo.processInfo.environment["DUBFARM_KEEP_TEST_DIRS"] == nil {
            try? FileManager.default.removeItem(at: dir)
        }
    }

    /// The job's output in the media store.
    func output(_ job: Int64) -> String { store.root.appendingPathComponent("jobs/\(job)/output.mp4").path }
}

/// Read-only view of a test farm's media store layout.
struct MediaStoreView {
    let root: URL
}

/// Counts video frames and measures streams with ffprobe, an independent check on our own prober.
func ffprobeCounts(_ path: String) -> (frames: Int, rate: String, audioDuration: Double)? {
    guard FileManager.default.isExecutableFile(atPath: "/usr/bin/ffprobe"),
          let r = try? ProcessControl.run("/usr/bin/ffprobe", ["-v", "error", "-count_packets", "-show_entries",
                                                               "stream=codec_type,nb_read_packets,r_frame_rate,duration",
                                                               "-of", "csv=p=0", path], timeout: 60) else { return nil }
    var frames = 0, rate = "", audio = 0.0
    for line in r.stdout.split(separator: "\n") {
        let f = line.split(separator: ",").map(String.init)
        if f.first == "video", f.count >= 4 { rate = f[1]; frames = Int(f[3]) ?? 0 }
        if f.first == "audio", f.count >= 4 { audio = Double(f[2]) ?? 0 }
    }
    return (frames, rate, audio)
}

/// Runs `/usr/bin/ffmpeg -v error -y ARGS` (the corpora's files are made with it), failing with
/// its error output.
func runFFmpeg(_ args: [String], timeout: Double) throws {
    let r = try ProcessControl.run("/usr/bin/ffmpeg", ["-v", "error", "-y"] + args, timeout: timeout)
    guard r.status == 0 else { throw TestTimeout(description: "ffmpeg \(args.joined(separator: " ")) failed: \(r.stderr)") }
}
