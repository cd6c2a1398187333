import DubfarmCore
import FarmClient
import FarmMonitor
import FarmProtocol
import FarmTestSupport
import Foundation
import LocalFarm
import MediaPipeline
import Testing

private let dashboardRepo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
private let browserCheck = dashboardRepo.appendingPathComponent("tools/browser/dashboard_check.py").path
private let venvPython = dashboardRepo.appendingPathComponent(".venv/bin/python").path

/// Why the two-browser test cannot run here, if it cannot.
private let browserMissing: String? = {
    guard Chromium.available else { return "needs Debian's chromium (tools/install-deps.sh)" }
    guard FileManager.default.isExecutableFile(atPath: venvPython),
          let r = try? ProcessControl.run(venvPython, ["-c", "import websockets"], timeout: 60), r.status == 0 else {
        return "needs .venv with websockets (make py-deps)"
    }
    return nil
}()

/// An HTTP request with curl: status and body.
func http(_ method: String, _ url: String, headers: [String] = [], body: String? = nil) throws -> (status: Int, body: String) {
    var args = ["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, url]
    for h in headers { args += ["-H", h] }
    if let body { args += ["--data-binary", body] }
    let r = try ProcessControl.run("/usr/bin/curl", args, timeout: 30)
    let lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
    return (Int(lines.last ?? "") ?? -1, lines.dropLast().joined(separator: "\n"))
}

/// A farm whose dashboard has one user (`ops`, made with `dubfarm config hash-password`) and a
/// long job that stays running (one slow sleep worker).
func farmWithDashboardUser(password: String) async throws -> (TestFarm, Int64) {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dubfarm-users-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let users = dir.appendingPathComponent("dashboard-users")
    let hashed = try ProcessControl.run("/bin/sh", ["-c", "printf '%s\\n' \"$1\" | \"$2\" config hash-password --user ops", "sh", password, dubfarmExecutable],
                                        timeout: 60)
    guard hashed.status == 0, hashed.stdout.hasPrefix("ops:$2b$") else { throw TestTimeout(description: "hash-password: \(hashed.stderr)") }
    try hashed.stdout.write(to: users, atomically: true, encoding: .utf8)
    let farm = try await TestFarm(settings: ["DUBFARM_DASHBOARD_USERS_FILE": users.path])
    try farm.startCoordinator()
    try farm.startWorker("slow", stage: "sleep", extra: ["--sleep-seconds", "600"])
    try farm.waitForWorkers(1, "the worker", timeout: 30)
    let job = try farm.submit(media("speaker-long.mp4"), audio: media("dub-long.wav"), stage: "sleep")
    try farm.wait(job: job, for: [.running])
    return (farm, job)
}

extension Integration {
    @Suite("Dashboard actions: login, cancel, retry, priority, pushed updates", .serialized)
    struct DashboardActionTests {
        @Test("without a login every action is refused; Basic or a session cookie lets a user act, named in the job's events",
              .enabled(if: haveMedia))
        func refusedWithoutLogin() async throws {
            let (farm, job) = try await farmWithDashboardUser(password: "correct horse")
            defer { farm.shutdown() }
            let base = farm.metricsURL + "/api/jobs/\(job)"
            let json = "Content-Type: application/json"
            #expect(try http("POST", base + "/cancel", headers: [json], body: "{}").status == 401)
            #expect(try http("POST", base + "/priority", headers: [json], body: "{\"priority\": 5}").status == 401)
            let basicWrong = "Authorization: Basic " + Data("ops:wrong password".utf8).base64EncodedString()
            #expect(try http("POST", base + "/cancel", headers: [json, basicWrong], body: "{}").status == 401)
            #expect(try farm.status(job).job.state == .running)

            // A login: the form's post sets a session cookie (HttpOnly, SameSite=Strict).
            let jar = farm.dir.appendingPathComponent("cookies").path
            let login = try ProcessControl.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "-c", jar,
                                                                  "--data", "user=ops&password=correct+horse&next=/jobs/\(job)", farm.metricsURL + "/login"],
                                               timeout: 30)
            #expect(login.stdout.hasPrefix("303 ") && login.stdout.hasSuffix("/jobs/\(job)"), "\(login.stdout)")
            let cookies = (try? String(contentsOfFile: jar, encoding: .utf8)) ?? ""
            #expect(cookies.contains("#HttpOnly_") && cookies.contains("dubfarm_session"), "\(cookies)")
            let withCookie = try ProcessControl.run("/usr/bin/curl", ["-s", "-b", jar, "-H", json, "--data", "{\"priority\": 5}",
                                                                       base + "/priority"], timeout: 30)
            let view = try JSONDecoder.iso.decode(JobView.self, from: Data(withCookie.stdout.utf8))
            #expect(view.priority == 5)
            // A form from elsewhere cannot post JSON: a non-JSON body is refused even with the cookie.
            let form = try ProcessControl.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-b", jar, "--data", "x=1",
                                                                 base + "/cancel"], timeout: 30)
            #expect(form.stdout == "415")
            let basic = "Authorization: Basic " + Data("ops:correct horse".utf8).base64EncodedString()
            let cancelled = try http("POST", base + "/cancel", headers: [json, basic], body: "{}")
            #expect(cancelled.status == 200, "\(cancelled.body)")
            #expect(try farm.status(job).job.state == .cancelled)
            let events = try farm.client().call(.events(EventsQuery(job: job)), as: [EventView].self)
            #expect(events.contains { $0.reason == "cancelled by dashboard:ops" }, "\(events.map(\.reason))")
            #expect(events.contains { $0.reason == "priority 0 → 5" })
        }

        @Test("headless Chromium logs in, cancels the running job and retries it from the job page; a second browser sees each change pushed within a second, without polling",
              .enabled(if: haveMedia && browserMissing == nil, Comment(rawValue: browserMissing ?? "")))
        func twoBrowsers() async throws {
            let (farm, job) = try await farmWithDashboardUser(password: "correct horse")
            defer { farm.shutdown() }
            let r = try ProcessControl.run(venvPython, [browserCheck, "--chromium", Chromium.path!, "--base", farm.metricsURL, "--job", "\(job)",
                                                        "--user", "ops", "--password", "correct horse"], timeout: 180)
            #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
            struct Seen: Decodable {
                var b_initial_state: String
                var unauthenticated_status: Int
                var a_session: String
                var cancel_seen_after_ms: Double
                var b_state_after_cancel: String
                var retry_seen_after_ms: Double
                var b_state_after_retry: String
                var b_farm_requests: Int
                var b_stream_updates: Int
                var b_states: [String]
            }
            let seen = try JSONDecoder().decode(Seen.self, from: Data(r.stdout.utf8))
            try r.stdout.write(to: testArtifacts.appendingPathComponent("dashboard-actions.json"), atomically: true, encoding: .utf8)
            #expect(seen.b_initial_state == "running")
            #expect(seen.unauthenticated_status == 401)
            #expect(seen.a_session == "ops")
            #expect(seen.b_state_after_cancel == "cancelled" || seen.b_states.contains("cancelled"))
            #expect(seen.cancel_seen_after_ms < 1000, "B saw the cancel \(seen.cancel_seen_after_ms) ms after the click")
            #expect(seen.retry_seen_after_ms < 1000, "B saw the retry \(seen.retry_seen_after_ms) ms after the click")
            #expect(seen.b_farm_requests == 0, "B never polled /api/farm")
            #expect(seen.b_stream_updates > 0)
            let final = try farm.status(job).job
            #expect(final.state == .running || final.state == .queued || final.state == .planning, "\(final.state)")
            let events = try farm.client().call(.events(EventsQuery(job: job)), as: [EventView].self)
            #expect(events.contains { $0.reason == "cancelled by dashboard:ops" })
        }

        @Test("a finished job's page offers a thumbnail: a JPEG of its middle frame", .enabled(if: haveMedia))
        func thumbnail() async throws {
            let farm = try await TestFarm.start(workers: 1)
            defer { farm.shutdown() }
            let job = try farm.submit(media("speaker-c.mp4"), audio: media("dub-1.wav"))
            try farm.wait(job: job)
            let page = try JSONDecoder.iso.decode(JobPage.self, from: Data(try httpGet(farm.metricsURL + "/api/jobs/\(job)").utf8))
            #expect(page.hasThumbnail && page.detail.job.state == .done)
            #expect(page.events.contains { $0.to == "done" })
            let file = farm.dir.appendingPathComponent("thumb.jpg").path
            let r = try ProcessControl.run("/usr/bin/curl", ["-s", "-o", file, "-w", "%{http_code} %{content_type}",
                                                              farm.metricsURL + "/api/jobs/\(job)/thumbnail"], timeout: 60)
            #expect(r.stdout == "200 image/jpeg", "\(r.stdout): \((try? String(contentsOfFile: file, encoding: .utf8)) ?? "")")
            let bytes = try Data(contentsOf: URL(fileURLWithPath: file))
            #expect(bytes.prefix(2) == Data([0xFF, 0xD8]), "a JPEG starts FF D8")
            let still = try ImageLoader.load(path: file)
            #expect(still.width == 590 && still.height == 590)
            #expect(try http("GET", farm.metricsURL + "/api/jobs/999/thumbnail").status == 404)
        }
    }
}
