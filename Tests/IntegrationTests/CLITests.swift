import DubfarmCore
import FarmProtocol
import Foundation
import LocalFarm
import Postgres
import Testing
@testable import MediaPipeline

/// `dubfarm probe`: what the farm sees in a file, before anyone submits it (issue 16, item 4).
@Suite("dubfarm probe", .enabled(if: haveMedia, "needs ../shared/media"))
struct ProbeCommandTests {
    @Test("a variable-frame-rate file: its frames, both rates, and the plan to re-time it; --json says the same; a missing file exits 2")
    func probe() throws {
        let r = try dubfarm(["probe", media("speaker-a.mp4"), media("speaker-long.mp4")])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out.contains("135 frames, variable frame rate (nominal 30 fps"), "\(r.out)")
        #expect(r.out.contains("re-cut first: variable frame rate"), "\(r.out)")
        #expect(r.out.contains("629 frames") && r.out.contains("cut as it is"), "\(r.out)")
        let j = try dubfarm(["probe", media("speaker-a.mp4"), "--json"])
        #expect(j.status == 0, "\(j.err)")
        let reports = try #require(try JSONSerialization.jsonObject(with: Data(j.out.utf8)) as? [[String: Any]])
        let a = try #require(reports.first)
        let timeline = try SourceIndexer.index(path: media("speaker-a.mp4")).info.timelineDuration
        #expect(a["frames"] as? Int == Int((timeline * 30).rounded(.up)) && (a["recut"] as? String)?.hasPrefix("variable frame rate") == true)
        #expect((a["info"] as? [String: Any])?["video"] != nil)
        let missing = try dubfarm(["probe", "/nonexistent/talk.mp4"])
        #expect(missing.status == 2 && missing.err.contains("talk.mp4: file not found"), "\(missing.err)")
        #expect(try dubfarm(["probe", "--help"]).out.contains("re-timed on its own timeline"))
    }
}

/// `--help` reads as paragraphs: the parser wraps the discussions; nothing breaks them by hand.
@Suite("dubfarm --help")
struct HelpTextTests {
    /// Every command path: the top level and each subcommand it lists, recursively.
    static func commands(_ path: [String] = []) throws -> [[String]] {
        let names = try subcommands(of: try dubfarm(path + ["--help"]).out).flatMap(\.names)
        return try [path] + names.filter { $0 != "help" }.flatMap { try commands(path + [$0]) }
    }

    /// The subcommand sections of a help text: each "… SUBCOMMANDS:" header (the top level's
    /// are grouped: "USER SUBCOMMANDS:") and the names of its "  name   abstract" lines, up to
    /// the section's blank line.
    static func subcommands(of help: String) -> [(header: String, names: [String])] {
        let lines = help.split(separator: "\n", omittingEmptySubsequences: false)
        return lines.indices.compactMap { i in
            guard lines[i].hasSuffix("SUBCOMMANDS:") else { return nil }
            let names = lines[(i + 1)...].prefix { !$0.isEmpty }.compactMap { line -> String? in
                guard line.hasPrefix("  "), !line.hasPrefix("   ") else { return nil }
                return line.split(separator: " ").first.map(String.init)
            }
            return (String(lines[i]), names)
        }
    }

    @Test("the top level groups its commands by who runs them: user, operator, developer")
    func grouped() throws {
        let sections = Self.subcommands(of: try dubfarm(["--help"]).out)
        #expect(sections.map(\.header) == ["USER SUBCOMMANDS:", "OPERATOR SUBCOMMANDS:", "DEVELOPER SUBCOMMANDS:"])
        let byHeader = Dictionary(uniqueKeysWithValues: sections.map { ($0.header, Set($0.names)) })
        #expect(byHeader["USER SUBCOMMANDS:"] == ["submit", "wait", "status", "jobs", "logs", "top", "cancel", "retry", "set-priority", "fetch", "probe"])
        #expect(byHeader["OPERATOR SUBCOMMANDS:"] == ["local", "coordinator", "worker", "workers", "gc", "migrate", "config", "keys"])
        #expect(byHeader["DEVELOPER SUBCOMMANDS:"] == ["model", "dataset"])   // bench: hidden, for `make bench`
        #expect(try dubfarm(["workers", "--help"]).status == 0)               // grouping changes no command's path
    }

    @Test("no command's --help breaks a sentence by hand: a short line is never continued by a lowercase word")
    func paragraphsWrap() throws {
        let paths = try Self.commands()
        #expect(paths.count > 20)
        for path in paths {
            let out = try dubfarm(path + ["--help"]).out
            let prose = out.components(separatedBy: "USAGE:")[0].split(separator: "\n", omittingEmptySubsequences: false)
            for (a, b) in zip(prose, prose.dropFirst()) where !a.hasPrefix(" ") && !b.hasPrefix(" ") && a.count < 60 {
                #expect(!(b.first?.isLowercase ?? false), "dubfarm \(path.joined(separator: " ")) --help: '\(a)' then '\(b)'")
            }
        }
    }
}

/// Runs the `dubfarm` binary; returns its exit status and output.
@discardableResult
func dubfarm(_ args: [String], environment: [String: String] = [:], timeout: Double = 300) throws -> (status: Int32, out: String, err: String) {
    var env = ProcessInfo.processInfo.environment
    env["DUBFARM_COORDINATOR"] = nil
    for (k, v) in environment { env[k] = v }
    let r = try ProcessControl.run(dubfarmExecutable, args, environment: env, timeout: timeout)
    return (r.timedOut ? -1 : r.status, r.stdout, r.stderr)
}

extension Integration {
    @Suite("Command line", .serialized)
    struct CLITests {
        @Test("usage errors exit 2 and say what is wrong")
        func usage() throws {
            let r = try dubfarm(["submit", "/nonexistent/talk.mp4", "--audio", "/nonexistent/dub.wav"])
            #expect(r.status == 2)
            #expect(r.err.contains("/nonexistent/talk.mp4"))
            #expect(try dubfarm(["jobs", "--state", "bogus", "--coordinator", "tcp://127.0.0.1:1"]).status == 2)
            #expect(try dubfarm(["no-such-command"]).status == 2)
        }

        @Test("a download whose --out cannot be written exits 4, naming the file, before it asks the coordinator")
        func localFile() throws {
            let port = ProcessControl.freePort()
            let r = try dubfarm(["fetch", "1", "--out", "/nonexistent-dir/dubbed.mp4", "--coordinator", "tcp://127.0.0.1:\(port)", "--timeout", "1"])
            #expect(r.status == 4, "\(r.status) \(r.err)")
            #expect(r.err.contains("/nonexistent-dir/dubbed.mp4: cannot write to /nonexistent-dir"), "\(r.err)")
            #expect(try dubfarm(["--help"]).out.contains("4 a file on this machine"))
        }

        @Test("an unreachable coordinator exits 3 and says how to start one")
        func unreachable() throws {
            let port = ProcessControl.freePort()
            let r = try dubfarm(["jobs", "--coordinator", "tcp://127.0.0.1:\(port)", "--timeout", "1"])
            #expect(r.status == 3)
            #expect(r.err.contains("did not answer"))
        }

        @Test("config check prints effective values with their source and hides passwords")
        func configCheck() throws {
            let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            let r = try dubfarm(["config", "check", "--config", repo.appendingPathComponent("coordinator.yml").path],
                                environment: ["DUBFARM_DATABASE_URL": "postgresql://farm:s3cret@db/farm", "DUBFARM_WORKERS_LIVENESS": "9"])
            #expect(r.status == 0)
            #expect(r.out.contains("liveness: 9"))
            #expect(r.out.contains("DUBFARM_WORKERS_LIVENESS"))
            #expect(!r.out.contains("s3cret"))
            let bad = try dubfarm(["config", "check"], environment: ["DUBFARM_OUTPUT_CRF": "99"])
            #expect(bad.status == 2)
            #expect(bad.err.contains("output.crf"))
        }

        @Test("submit --wait --out against a farm: progress lines, the output file, exit 0; a bad file exits 2",
              .enabled(if: haveMedia))
        func submitWait() async throws {
            let farm = try await TestFarm.start(workers: 1)
            defer { farm.shutdown() }
            let out = farm.dir.appendingPathComponent("dubbed.mp4").path
            let r = try dubfarm(["submit", media("speaker-c.mp4"), "--audio", media("dub-1.wav"), "--wait", "--out", out,
                                 "--coordinator", farm.controlEndpoint])
            #expect(r.status == 0, "\(r.err)")
            #expect(r.out.contains("output: \(out)"))
            #expect(r.out.contains("segments 1/1"))
            #expect(try MediaProbe.probe(path: out).video?.frameCount == 125)
            let jobs = try dubfarm(["jobs", "--json", "--coordinator", farm.controlEndpoint])
            let decoded = try JSONDecoder.iso.decode([JobView].self, from: Data(jobs.out.utf8))
            #expect(decoded.first?.state == .done)

            // Not a video: refused at once with the file's name; the job is recorded as failed.
            let junk = farm.dir.appendingPathComponent("notes.mp4")
            try Data("this is not a video".utf8).write(to: junk)
            let bad = try dubfarm(["submit", junk.path, "--audio", media("dub-1.wav"), "--coordinator", farm.controlEndpoint])
            #expect(bad.status == 2)
            #expect(bad.err.contains("notes.mp4"))
            let failed = try dubfarm(["jobs", "--state", "failed", "--json", "--coordinator", farm.controlEndpoint])
            #expect(try JSONDecoder.iso.decode([JobView].self, from: Data(failed.out.utf8)).count == 1)

            // `logs` prints a job's whole history, however long: more events than one page (1,000).
            let job = try #require(decoded.first?.id)
            let sql = try PostgresConnection(url: farm.db.url)
            try sql.query("""
                INSERT INTO events (kind, job_id, segment_idx, worker, from_state, to_state, reason, actor)
                SELECT 'segment', $1, 0, 'w', 'leased', 'pending', 'history ' || i, 'test' FROM generate_series(1, 2500) i
                """, [.int(Int(job))])
            let total = try sql.query("SELECT count(*) AS n FROM events WHERE job_id = $1", [.int(Int(job))])[0]["n"].decode(Int.self)
            #expect(total > 2500)
            let logs = try dubfarm(["logs", "\(job)", "--json", "--coordinator", farm.controlEndpoint])
            #expect(logs.status == 0, "\(logs.err)")
            let lines = logs.out.split(separator: "\n")
            #expect(lines.count == total)
            #expect(lines.last?.contains("history 2500") == true)
        }

        @Test("local up / status / down: a private farm with its own PostgreSQL dubs the demo sample", .enabled(if: haveMedia))
        func localFarm() throws {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dubfarm-local-\(UUID().uuidString.prefix(8))")
            defer {
                _ = try? dubfarm(["local", "down", "--dir", dir.path])
                try? FileManager.default.removeItem(at: dir)
            }
            let up = try dubfarm(["local", "up", "--dir", dir.path, "--workers", "2"], timeout: 120)
            #expect(up.status == 0, "\(up.out)\(up.err)")
            #expect(up.out.contains("coordinator: tcp://127.0.0.1:"))
            // Twice is harmless.
            let again = try dubfarm(["local", "up", "--dir", dir.path, "--workers", "2"])
            #expect(again.status == 0)
            #expect(again.out.contains("already running"))
            let env = ["DUBFARM_LOCAL_DIR": dir.path]
            let out = dir.appendingPathComponent("out.mp4").path
            let r = try dubfarm(["submit", media("speaker-c.mp4"), "--audio", media("dub-1.wav"), "--wait", "--out", out], environment: env)
            #expect(r.status == 0, "\(r.err)")
            #expect(FileManager.default.fileExists(atPath: out))
            // The local farm runs CURVE with keys of its own, and the CLI used them by itself.
            #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("keys/clients/client.key_secret").path))
            let coordinatorLog = (try? String(contentsOf: dir.appendingPathComponent("logs/coordinator.log"), encoding: .utf8)) ?? ""
            #expect(coordinatorLog.contains("CURVE is on"))
            let status = try dubfarm(["local", "status", "--dir", dir.path])
            #expect(status.out.contains("running"))
            let state = try #require(LocalFarmState.load(directory: dir))
            let down = try dubfarm(["local", "down", "--dir", dir.path], timeout: 60)
            #expect(down.status == 0)
            #expect(!ProcessControl.isAlive(state.coordinatorPID))
            #expect(state.workerPIDs.allSatisfy { !ProcessControl.isAlive($0) })
        }
    }
}

extension JSONDecoder {
    static var iso: JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }
}
