import Crypto
import DubfarmCore
import FarmClient
import FarmProtocol
import FarmTestSupport
import Foundation
import LocalFarm
import Testing

func sha256Hex(_ bytes: [UInt8]) -> String { SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined() }

extension Integration {
    @Suite("Security: client input, uploads, credentials, shutdown", .serialized, .enabled(if: haveMedia, "needs ../shared/media"))
    struct InputSafetyTests {
        /// Runs `body` and returns the DubfarmError it throws (recording an issue when it succeeds).
        func refusal(_ what: String, _ body: () throws -> Void) -> DubfarmError? {
            do {
                try body()
                Issue.record("\(what) was accepted")
                return nil
            } catch let e as DubfarmError {
                return e
            } catch {
                Issue.record("\(what): unexpected \(error)")
                return nil
            }
        }

        @Test("no client input names a path outside the media store: ../, absolute paths, symlinks, display names, model ids")
        func paths() async throws {
            let farm = try await TestFarm.start(workers: 1)
            defer { farm.shutdown() }
            let c = try farm.client(timeout: 60)
            let store = farm.store.root
            let audio = try c.upload(path: media("dub-1.wav"))
            let video = try c.upload(path: media("speaker-c.mp4"))
            let hostile = ["../../../../etc/passwd", "/etc/passwd", "..", "../uploads/\(audio)", "uploads/\(audio).done",
                           String(repeating: "a", count: 32) + "/../../x", audio.uppercased(), "", "%2e%2e%2fetc%2fpasswd"]
            for id in hostile {
                let e = refusal("submit with video '\(id)'") {
                    _ = try c.call(.submit(SubmitSpec(video: id, audio: audio, videoName: "v.mp4", audioName: "a.wav")))
                }
                #expect(e?.code == .badInput, "\(id): \(e?.message ?? "")")
                #expect(refusal("chunk for '\(id)'") { try c.call(.uploadChunk(id: id, offset: 0, data: [1])) }?.code == .notFound)
                #expect(refusal("end of '\(id)'") { try c.call(.uploadEnd(id: id)) }?.code == .notFound)
            }
            // A symbolic link planted in the store is not taken as an upload, wherever it points.
            let planted = String(repeating: "b", count: 32)
            try FileManager.default.createSymbolicLink(atPath: store.appendingPathComponent("uploads/\(planted).done").path,
                                                       withDestinationPath: media("speaker-c.mp4"))
            let e = refusal("a symlinked upload") {
                _ = try c.call(.submit(SubmitSpec(video: planted, audio: audio, videoName: "v.mp4", audioName: "a.wav")))
            }
            #expect(e?.code == .badInput)
            // Nor is a symlinked output served.
            let fakeJob = store.appendingPathComponent("jobs/424242")
            try FileManager.default.createDirectory(at: fakeJob, withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(atPath: fakeJob.appendingPathComponent("output.mp4").path, withDestinationPath: "/etc/passwd")
            try "0".write(to: fakeJob.appendingPathComponent("output.mp4.sha256"), atomically: true, encoding: .utf8)
            #expect(refusal("fetch of a symlinked output") { try c.call(.fetch(FetchRequest(job: 424242, offset: 0, length: 100))) }?.code == .notFound)
            #expect(refusal("fetch of a negative job") { try c.call(.fetch(FetchRequest(job: -1, offset: 0, length: 100))) }?.code == .notFound)
            // A model id is an id, never a path.
            #expect(refusal("model '../x'") {
                _ = try c.call(.submit(SubmitSpec(video: video, audio: audio, videoName: "v.mp4", audioName: "a.wav", model: "../../etc/passwd")))
            }?.code == .badInput)
            // Display names are only names: the last component, never a path.
            let evil = "dubfarm-evil-\(UUID().uuidString.prefix(8)).mp4"
            let job = try c.call(.submit(SubmitSpec(video: video, audio: audio, videoName: "../../../../../tmp/\(evil)",
                                                    audioName: "/etc/passwd")), as: JobView.self)
            #expect(job.video == evil)
            #expect(job.audio == "passwd")
            #expect(try farm.wait(job: job.id).job.state == .done)
            #expect(!FileManager.default.fileExists(atPath: "/tmp/\(evil)"))
            #expect(FileManager.default.fileExists(atPath: store.appendingPathComponent("jobs/\(job.id)/video").path))
        }

        @Test("uploads are size-limited and checksummed; a refused upload leaves nothing behind")
        func uploads() async throws {
            let farm = try await TestFarm.start(workers: 0, settings: ["DUBFARM_MEDIA_MAX_UPLOAD_BYTES": "1000000"])
            defer { farm.shutdown() }
            let c = try farm.client(timeout: 60)
            // Above media.max_upload_bytes: refused at UPLOAD-BEGIN, before any byte is stored.
            let big = refusal("an upload above the limit") { _ = try c.upload(path: media("speaker-long.mp4")) }
            #expect(big?.code == .badInput)
            #expect(big?.message.contains("media.max_upload_bytes") == true, "\(big?.message ?? "")")
            #expect(big?.message.contains("speaker-long.mp4") == true)
            // Lying about the size.
            let data = Array("0123456789".utf8)
            let begun = try c.call(.uploadBegin(UploadBegin(name: "x.bin", size: 10, sha256: sha256Hex(data))), as: UploadStarted.self)
            let more = refusal("more bytes than announced") { try c.call(.uploadChunk(id: begun.id, offset: 0, data: data + [1])) }
            #expect(more?.message.contains("more bytes than the announced") == true)
            // Lying about the checksum (or bytes corrupted in transit).
            let other = try c.call(.uploadBegin(UploadBegin(name: "y.bin", size: 10, sha256: sha256Hex(Array("9876543210".utf8)))), as: UploadStarted.self)
            try c.call(.uploadChunk(id: other.id, offset: 0, data: data))
            let sum = refusal("a checksum mismatch") { try c.call(.uploadEnd(id: other.id)) }
            #expect(sum?.message.contains("checksum mismatch") == true)
            // Nothing of the two refused uploads is left behind.
            let left = try FileManager.default.contentsOfDirectory(atPath: farm.store.root.appendingPathComponent("blobs").path)
            #expect(!left.contains { $0.hasPrefix(begun.id) || $0.hasPrefix(other.id) }, "\(left)")
            // Out-of-order chunks (refused; the upload itself stays open, to be resumed at 0).
            let third = try c.call(.uploadBegin(UploadBegin(name: "z.bin", size: 10, sha256: sha256Hex(data))), as: UploadStarted.self)
            #expect(refusal("a chunk at the wrong offset") { try c.call(.uploadChunk(id: third.id, offset: 5, data: [1])) }?.code == .badInput)
            #expect(refusal("a bad checksum format") {
                try c.call(.uploadBegin(UploadBegin(name: "w.bin", size: 1, sha256: "../../etc")))
            }?.code == .badInput)
            #expect(refusal("a negative size") { try c.call(.uploadBegin(UploadBegin(name: "n.bin", size: -1, sha256: sha256Hex(data)))) } != nil)
            // A good upload within the limit is verified end to end, and kept by its SHA-256.
            let ok = try c.upload(path: media("speaker-c.mp4"))
            #expect(ok == sha256Hex(Array(try Data(contentsOf: URL(fileURLWithPath: media("speaker-c.mp4"))))))
            #expect(FileManager.default.fileExists(atPath: farm.store.root.appendingPathComponent("blobs/\(ok)").path))
        }

        @Test("database credentials: the password never reaches the coordinator's log or config check, even when the connection fails")
        func credentials() async throws {
            let password = "Pw-\(UUID().uuidString.prefix(12))"
            let probe = try await TestDatabase.create()
            let withPassword = probe.url.replacingOccurrences(of: "postgresql://postgres@", with: "postgresql://postgres:\(password)@")
            probe.drop()
            #expect(withPassword.contains(password))
            // From a file (database.url_file); the coordinator logs the URL it uses, redacted.
            let farm = try await TestFarm()
            defer { farm.shutdown() }
            let urlFile = farm.dir.appendingPathComponent("db-url")
            try (farm.environment["DUBFARM_DATABASE_URL"]!.replacingOccurrences(of: "postgresql://postgres@", with: "postgresql://postgres:\(password)@") + "\n")
                .write(to: urlFile, atomically: true, encoding: .utf8)
            farm.environment["DUBFARM_DATABASE_URL"] = nil
            farm.environment["DUBFARM_DATABASE_URL_FILE"] = urlFile.path
            try farm.startCoordinator()
            try farm.waitFor("the startup line", timeout: 30) { farm.tail("coordinator", lines: 100).contains("coordinator ready") }
            let log = farm.tail("coordinator", lines: 1000)
            #expect(!log.contains(password))
            #expect(log.contains("postgres:***@"), "the startup line shows the redacted URL")
            let check = try dubfarm(["config", "check"], environment: ["DUBFARM_DATABASE_URL_FILE": urlFile.path])
            #expect(check.status == 0, "\(check.err)")
            #expect(!(check.out + check.err).contains(password))
            let checkEnv = try dubfarm(["config", "check"], environment: ["DUBFARM_DATABASE_URL": withPassword])
            #expect(!(checkEnv.out + checkEnv.err).contains(password))
            #expect(checkEnv.out.contains("postgres:***@"))
            // A coordinator that cannot connect says why, without the password.
            var env = ProcessInfo.processInfo.environment
            env["DUBFARM_DATABASE_URL"] = "postgresql://dubfarm:\(password)@127.0.0.1:\(ProcessControl.freePort())/dubfarm"
            env["DUBFARM_COORDINATOR_WORK_ENDPOINT"] = "tcp://127.0.0.1:\(ProcessControl.freePort())"
            env["DUBFARM_COORDINATOR_CONTROL_ENDPOINT"] = "tcp://127.0.0.1:\(ProcessControl.freePort())"
            env["DUBFARM_MEDIA_STORE"] = farm.dir.appendingPathComponent("store2").path
            let failed = try ProcessControl.run(dubfarmExecutable, ["coordinator"], environment: env, timeout: 120)
            #expect(failed.status != 0)
            #expect(!(failed.stdout + failed.stderr).contains(password), "\(failed.stderr)")
            #expect((failed.stdout + failed.stderr).contains("dubfarm:***@") || (failed.stdout + failed.stderr).contains("127.0.0.1"), "\(failed.stderr)")
        }

        @Test("graceful shutdown: SIGTERM stops dispatching, lets the segment in flight finish, exits 0; the next coordinator resumes")
        func gracefulShutdown() async throws {
            let farm = try await TestFarm()
            defer { farm.shutdown() }
            try farm.startCoordinator()
            try farm.startWorker("w1", stage: "sleep", extra: ["--sleep-seconds", "2"])
            let job = try farm.submit(media("speaker-long.mp4"), audio: media("dub-long.wav"), stage: "sleep")
            try farm.waitFor("a segment started on the worker", timeout: 60) { farm.tail("w1", lines: 400).contains("segment started") }
            let pid = farm.coordinatorPID
            kill(pid, SIGTERM)
            // It exits by itself, with status 0, once the segment in flight is back (drain: 10 s at most).
            var status: Int32 = 0
            let deadline = Date().addingTimeInterval(90)
            var exited = false
            while Date() < deadline {
                if waitpid(pid, &status, WNOHANG) == pid { exited = true; break }
                usleep(50_000)
            }
            #expect(exited, "the coordinator did not exit after SIGTERM:\n\(farm.tail("coordinator", lines: 40))")
            #expect((status & 0x7f) == 0 && (status >> 8) & 0xff == 0, "exit status \(status)")
            let log = farm.tail("coordinator", lines: 400)
            #expect(log.contains("shutting down: no new segments will be handed out"))
            #expect(log.contains("coordinator stopped"))
            // In the database: the segment in flight finished and nothing else was handed out.
            let store = farm.db.store()
            try await store.connect()
            let segments = try await store.segments(job: JobID(job))
            await store.close()
            let done = segments.filter { $0.state == .done }
            #expect(done.count == 1, "\(segments.map { ($0.ref.index, $0.state, $0.leases) })")
            #expect(segments.filter { $0.state != .done }.allSatisfy { $0.state == .pending && $0.leases == 0 },
                    "\(segments.map { ($0.ref.index, $0.state, $0.leases) })")
            // The next coordinator resumes: the worker reports to it and the job completes without redoing anything.
            try farm.startCoordinator()
            let d = try farm.wait(job: job, timeout: 180)
            #expect(d.job.state == .done, "\(d.job.error ?? "")")
            #expect(d.segments.allSatisfy { $0.leases == 1 }, "\(d.segments.map { ($0.index, $0.leases) })")
        }
    }
}
