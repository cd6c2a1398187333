import DubfarmCore
import FarmProtocol
import Foundation
import LocalFarm
import Testing

// docs/protocol.md is meant to be complete enough to write a worker in another language. The
// proof: tools/pyworker/worker.py, a worker in Python (pyzmq) written from that document alone,
// is the only worker of a real farm and completes a passthrough job, in plaintext and with CURVE.

/// The repository root (this file is Tests/IntegrationTests/PythonWorkerTests.swift).
private let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
private let venvPython = repositoryRoot.appendingPathComponent(".venv/bin/python").path
private let pythonWorker = repositoryRoot.appendingPathComponent("tools/pyworker/worker.py").path

/// Why the Python worker tests cannot run here, or nil when they can.
private let pythonWorkerMissing: String? = {
    guard haveMedia else { return "needs ../shared/media" }
    guard FileManager.default.isExecutableFile(atPath: "/usr/bin/ffmpeg") else { return "needs /usr/bin/ffmpeg" }
    guard FileManager.default.isExecutableFile(atPath: venvPython) else { return "needs .venv/bin/python (make py-deps)" }
    guard let r = try? ProcessControl.run(venvPython, ["-c", "import zmq, sys; sys.exit(0 if zmq.has('curve') else 1)"], timeout: 60),
          r.status == 0 else { return "needs pyzmq with CURVE in .venv (make py-deps installs training/requirements.txt)" }
    return nil
}()

extension Integration {
    @Suite("Python worker (docs/protocol.md)", .serialized,
           .enabled(if: pythonWorkerMissing == nil, Comment(rawValue: pythonWorkerMissing ?? "")))
    struct PythonWorkerTests {
        /// speaker-c.mp4's first 50 frames made all-intra: the Python worker copies packets and
        /// encodes nothing, so every frame must be a keyframe (docs/protocol.md, "The passthrough
        /// stage without a codec").
        func intraClip(_ farm: TestFarm) throws -> String {
            let clip = farm.dir.appendingPathComponent("speaker-c-intra.mp4").path
            let made = try ProcessControl.run("/usr/bin/ffmpeg", ["-v", "error", "-y", "-i", media("speaker-c.mp4"), "-an", "-frames:v", "50",
                                                                  "-c:v", "libx264", "-preset", "ultrafast", "-g", "1", "-bf", "0",
                                                                  "-pix_fmt", "yuv420p", clip], timeout: 120)
            #expect(made.status == 0, "\(made.stderr)")
            return clip
        }

        /// The MD5 of every decoded video frame, in order (ffmpeg's framemd5, timestamps left out).
        func frameHashes(_ path: String) throws -> [String] {
            let r = try ProcessControl.run("/usr/bin/ffmpeg", ["-v", "error", "-i", path, "-map", "0:v", "-f", "framemd5", "-"], timeout: 120)
            #expect(r.status == 0, "\(r.stderr)")
            return r.stdout.split(separator: "\n").filter { !$0.hasPrefix("#") }.compactMap { line in
                line.split(separator: ",").last.map { $0.trimmingCharacters(in: .whitespaces) }
            }
        }

        /// Starts the Python worker as the farm's only worker and waits until the coordinator lists it.
        func startPythonWorker(_ farm: TestFarm, _ name: String, extra: [String] = []) throws -> Int32 {
            let pid = try ProcessControl.spawnDetached(
                venvPython, ["-u", pythonWorker, "--connect", farm.workEndpoint, "--name", name,
                             "--heartbeat", String(farm.heartbeat), "--liveness", String(farm.liveness)] + extra,
                log: farm.log(name), environment: farm.environment)
            farm.workers[name] = pid
            do {
                try farm.waitFor("the Python worker to connect", timeout: 60) {
                    guard ProcessControl.isAlive(pid) else { throw TestTimeout(description: "the Python worker exited:\n\(farm.tail(name, lines: 40))") }
                    return try farm.client().call(.workers, as: [WorkerView].self).map(\.name) == [name]
                }
            } catch {
                Issue.record("\(error)\n--- \(name) ---\n\(farm.tail(name, lines: 40))")
                throw error
            }
            return pid
        }

        /// Submits the all-intra clip, waits for it and checks the output frame by frame; then
        /// stops the worker with SIGTERM and checks it said DISCONNECT and exited 0.
        func passthroughJob(_ farm: TestFarm, worker name: String, pid: Int32) throws {
            let clip = try intraClip(farm)
            let job = try farm.submit(clip, audio: media("dub-1.wav"), stage: "passthrough")
            let d = try farm.wait(job: job, timeout: 180)
            #expect(d.job.state == .done, "\(d.job.error ?? "")\n--- \(name) ---\n\(farm.tail(name, lines: 40))")
            guard d.job.state == .done else { return }
            #expect(d.job.frames == 50)
            #expect(d.segments.count == 5, "10-frame segments: \(d.segments.map { "\($0.startFrame)..<\($0.endFrame)" })")
            #expect(d.segments.allSatisfy { $0.worker == name && $0.leases == 1 && $0.stats?.frames == $0.endFrame - $0.startFrame },
                    "\(d.segments.map { ($0.worker ?? "-", $0.leases, $0.stats?.frames ?? -1) })")
            // Frame-exact: as many frames as the input, each decoding to the input's very pixels.
            if let probe = ffprobeCounts(farm.output(job)) {
                #expect(probe.frames == 50)
                #expect(probe.rate == "25/1")
            }
            let source = try frameHashes(clip), output = try frameHashes(farm.output(job))
            #expect(source.count == 50)
            #expect(output == source, "the output's frames differ from the input's")

            // SIGTERM: the worker says DISCONNECT (the coordinator forgets it at once) and exits 0.
            kill(pid, SIGTERM)
            try farm.waitFor("the coordinator to log the worker's DISCONNECT", timeout: 30) {
                farm.tail("coordinator", lines: 300).contains("worker disconnected: ")
            }
            #expect(try farm.client().call(.workers, as: [WorkerView].self).isEmpty)
            var status: Int32 = 0
            var exited = false
            let deadline = Date().addingTimeInterval(15)
            while Date() < deadline {
                if waitpid(pid, &status, WNOHANG) == pid { exited = true; break }
                usleep(50_000)
            }
            farm.workers[name] = nil
            #expect(exited, "the Python worker did not exit within 15 s of SIGTERM")
            #expect(exited && (status & 0x7f) == 0 && ((status >> 8) & 0xff) == 0, "exit status \(status)\n\(farm.tail(name, lines: 20))")
        }

        static let settings = ["DUBFARM_SEGMENTS_SECONDS": "0.4"]

        @Test("plaintext: the Python worker alone completes a passthrough job, frame-exact, and leaves with DISCONNECT on SIGTERM")
        func plaintext() async throws {
            let farm = try await TestFarm(settings: Self.settings)
            defer { farm.shutdown() }
            try farm.startCoordinator()
            let pid = try startPythonWorker(farm, "py-plain")
            try passthroughJob(farm, worker: "py-plain", pid: pid)
        }

        @Test("CURVE: the Python worker, with key files from dubfarm's format, is admitted and completes a passthrough job, frame-exact")
        func curve() async throws {
            let keys = try TestKeys()
            defer { keys.remove() }
            let farm = try await TestFarm(settings: Self.settings.merging(keys.settings) { a, _ in a })
            defer { farm.shutdown() }
            farm.clientCurve = (keys.coordinator.publicKey, keys.client)
            try farm.startCoordinator()
            let pid = try startPythonWorker(farm, "py-curve", extra: keys.workerArgs(keys.dir + "/workers/w1.key_secret"))
            #expect(farm.tail("coordinator", lines: 200).contains("CURVE is on"))
            try passthroughJob(farm, worker: "py-curve", pid: pid)
        }
    }
}
