import ArgumentParser
import DubfarmCore
import FarmClient
import FarmProtocol
import Foundation

struct Submit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Submit a video and a dub track; prints the job id.",
        discussion: """
            The files are uploaded to the coordinator in checksummed chunks, so it may run on another \
            machine. With --wait the command follows the job with a progress bar and exits 0 when it \
            is done, 1 when it failed; with --out it also downloads the result.

            Example: dubfarm submit talk.mp4 --audio dub-es.wav --wait --out talk-es.mp4
            """)

    @Argument(help: "The video to dub (any container and codec FFmpeg reads).")
    var video: String

    @Option(name: .long, help: "The dub track: replaces the video's audio, fitted to the video's duration.")
    var audio: String

    @Option(name: .long, help: "A picture of the face to swap in (optional).")
    var face: String?

    @Option(name: .long, help: "Higher runs first.")
    var priority: Int = 0

    @Option(name: .long, help: "Processing stage (default: the coordinator's).")
    var stage: String?

    @Option(name: .long, help: "Model the job requires: NAME (any version) or NAME@VERSION, as `dubfarm workers` shows them. Workers without it get none of its segments; `status` says when none connected has it.")
    var model: String?

    @Option(name: .long, help: ArgumentHelp("Fine-tune the model on this video's own face and speech before dubbing it, for SECONDS of training (--personalise alone: 300); a worker started with --personalise does it, and every segment then runs on the job's own weights. 0: none, even when the coordinator personalises by default.", valueName: "SECONDS"))
    var personalise: Int?

    @Flag(name: .long, help: "If the personalisation fails, dub with the default weights instead of failing the job.")
    var personaliseFallback = false

    @Option(name: .long, help: ArgumentHelp("Train the personalisation data-parallel (torchrun) on up to N workers started with --personalise: the one that takes it and those idle at that moment. Each trains on its own batches for the same SECONDS, so N workers see about N times the footage.", valueName: "N"))
    var personaliseWorkers: Int?

    @Option(name: .long, help: "Download the result here when done (implies --wait).")
    var out: String?

    @Flag(name: .long, help: "Wait for the job to finish, showing progress.")
    var wait = false

    @OptionGroup var client: ClientOptions

    func validate() throws {
        for (what, path) in [("video", video), ("audio", audio)] + (face.map { [("face", $0)] } ?? []) {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
                throw ValidationError("\(path): no such \(what) file")
            }
            guard !isDir.boolValue else { throw ValidationError("\(path): is a directory, not a \(what) file") }
            guard FileManager.default.isReadableFile(atPath: path) else { throw ValidationError("\(path): not readable") }
        }
        if let p = personalise, !(0...PersonaliseRequest.maxSeconds).contains(p) {
            throw ValidationError("--personalise takes seconds of training, 0…\(PersonaliseRequest.maxSeconds) (\(p) given)")
        }
        if personaliseFallback && personalise == nil {
            throw ValidationError("--personalise-fallback goes with --personalise")
        }
        if let n = personaliseWorkers {
            guard personalise != nil else { throw ValidationError("--personalise-workers goes with --personalise") }
            guard (1...PersonaliseRequest.maxWorkers).contains(n) else {
                throw ValidationError("--personalise-workers takes 1…\(PersonaliseRequest.maxWorkers) workers (\(n) given)")
            }
        }
        if let out {
            let dir = URL(fileURLWithPath: out).deletingLastPathComponent().path
            guard FileManager.default.isWritableFile(atPath: dir) else {
                throw ValidationError("--out \(out): cannot write to \(dir)")
            }
        }
    }

    func run() throws {
        let c = try client.client()
        _ = try c.call(.hello, as: ServerHello.self)
        let progress = UploadProgress(quiet: client.json)
        let v = try c.upload(path: video) { progress.show(video, $0, $1) }
        let a = try c.upload(path: audio) { progress.show(audio, $0, $1) }
        let f = try face.map { p in try c.upload(path: p) { progress.show(p, $0, $1) } }
        progress.done()
        let name = { (p: String) in URL(fileURLWithPath: p).lastPathComponent }
        let job = try c.call(.submit(SubmitSpec(video: v, audio: a, face: f, videoName: name(video), audioName: name(audio),
                                                faceName: face.map(name), priority: priority, stage: stage, model: model,
                                                personalise: personalise.map { PersonaliseRequest(seconds: $0, fallback: personaliseFallback,
                                                                                                  workers: personaliseWorkers ?? 1) })),
                             as: JobView.self)
        if !(wait || out != nil) {
            if client.json { try printJSON(job) } else { print(job.id) }
            return
        }
        if !client.json { print("job \(job.id) submitted") }
        let final = try follow(c, job: job.id, json: client.json)
        if client.json { try printJSON(final) }
        guard final.state == .done else {
            throw JobEnded(message: "job \(final.id) \(final.state): \(final.error ?? "no reason recorded")")
        }
        if let out {
            try c.download(job: job.id, to: out) { done, total in
                if !client.json && stdoutIsTerminal { printProgressLine("downloading", Double(done) / Double(max(total, 1)), "") }
            }
            if !client.json {
                if stdoutIsTerminal { print("") }
                print("output: \(out)")
            }
        } else if !client.json {
            print("job \(final.id) done; download it with: dubfarm fetch \(final.id) --out FILE")
        }
    }
}

extension Submit {
    /// `--personalise` takes its value only as `--personalise=SECONDS`: alone, it means the
    /// default budget (ArgumentParser has no options with an optional value).
    static func expandingPersonalise(_ arguments: [String]) -> [String] {
        guard arguments.first == "submit" else { return arguments }
        return arguments.map { $0 == "--personalise" ? "--personalise=\(PersonaliseRequest.defaultSeconds)" : $0 }
    }
}

/// Follows a job until it ends, drawing a progress bar on a terminal or one line per change otherwise.
func follow(_ c: ControlClient, job: Int64, json: Bool) throws -> JobView {
    var last = ""
    var rate = RateEstimator()
    while true {
        let detail = try c.call(.status(job: job), as: JobDetail.self)
        let j = detail.job
        rate.add(frames: j.framesDone)
        if !json {
            let segs = "segments \(j.segments.done)/\(j.segments.total)"
            let frames = j.frames.map { "frames \(j.framesDone)/\($0)" } ?? "frames ?"
            let fps = rate.fps.map { String(format: "%.1f fps", $0) } ?? "-- fps"
            var eta = ""
            if let f = j.frames, let r = rate.fps, r > 0 { eta = "ETA " + formatDuration(Double(f - j.framesDone) / r) }
            var text = "\(j.state)  \(segs)  \(frames)  \(fps)  \(eta)"
            var plain = "job \(j.id) \(j.state) \(segs) \(frames)"
            if j.state == .personalising, let p = detail.job.personalisation {
                text = "personalising: \(p.summary)"
                plain = "job \(j.id) personalising: \(p.state) step \(p.step)"
            }
            if stdoutIsTerminal {
                printProgressLine("job \(j.id)", j.state == .personalising ? (j.personalisation?.progress ?? 0) : j.progress, text)
            } else {
                let line = plain
                if line != last { print(line); fflush(nil) }
                last = line
            }
        }
        if j.state.isTerminal {
            if !json && stdoutIsTerminal { print("") }
            return j
        }
        Thread.sleep(forTimeInterval: 0.5)
    }
}

/// Frames per second over the last few seconds.
struct RateEstimator {
    var samples: [(Date, Int)] = []
    mutating func add(frames: Int) {
        samples.append((Date(), frames))
        samples.removeAll { Date().timeIntervalSince($0.0) > 10 }
    }
    var fps: Double? {
        guard let a = samples.first, let b = samples.last, b.0.timeIntervalSince(a.0) > 0.9, b.1 > a.1 else { return nil }
        return Double(b.1 - a.1) / b.0.timeIntervalSince(a.0)
    }
}

func formatDuration(_ s: Double) -> String {
    guard s.isFinite, s >= 0 else { return "--" }
    let t = Int(s.rounded())
    return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) : String(format: "%d:%02d", t / 60, t % 60)
}

func printProgressLine(_ label: String, _ fraction: Double, _ text: String) {
    let width = 30
    let f = max(0, min(1, fraction))
    let filled = Int(f * Double(width))
    let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
    print("\r\u{1B}[2K\(label) \(bar) \(String(format: "%3d%%", Int(f * 100)))  \(text)", terminator: "")
    fflush(nil)
}

final class UploadProgress {
    let quiet: Bool
    var shown = false
    init(quiet: Bool) { self.quiet = quiet }
    func show(_ path: String, _ done: Int64, _ total: Int64) {
        guard !quiet, stdoutIsTerminal else { return }
        shown = true
        printProgressLine("uploading \(URL(fileURLWithPath: path).lastPathComponent)", Double(done) / Double(max(total, 1)),
                          "\(done / 1024) / \(total / 1024) KiB")
    }
    func done() { if shown { print("") } }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a job and its segments.")
    @Argument(help: "The job id.") var job: Int64
    @OptionGroup var client: ClientOptions

    func run() throws {
        let d = try client.client().call(.status(job: job), as: JobDetail.self)
        if client.json { return try printJSON(d) }
        let j = d.job
        print("job \(j.id)  \(j.state)  priority \(j.priority)  stage \(j.stage)" + (j.model.map { "  model \($0)" } ?? ""))
        print("  video   \(j.video)" + (j.frames.map { "  (\($0) frames at \(j.frameRate ?? "?") fps, \(j.width ?? 0)x\(j.height ?? 0))" } ?? ""))
        print("  audio   \(j.audio)" + (j.audioFit.map { "  (\($0))" } ?? ""))
        if let f = j.face { print("  face    \(f)") }
        print("  progress \(Int(j.progress * 100))%  segments \(j.segments.done)/\(j.segments.total) done, \(j.segments.leased) running, \(j.segments.pending) pending" + (j.segments.dead > 0 ? ", \(j.segments.dead) dead" : ""))
        if let w = j.waitingFor { print("  waiting \(w)") }
        if let p = j.personalisation {
            print("  personalise  \(p.summary)")
            if p.state != "done" {
                print("               budget \(p.budgetSeconds) s, \(Int(p.elapsedSeconds)) s spent, attempt \(max(p.leases, 1))"
                      + (p.failures > 0 ? ", \(p.failures) failed" : "") + (p.checkpointStep.map { ", checkpoint at step \($0)" } ?? "")
                      + (p.datasetFrames.map { ", \($0) frames" } ?? "") + (p.fallback ? ", default weights if it fails" : "")
                      + ((p.workers ?? 1) > 1 ? ", up to \(p.workers!) workers" : ""))
            }
            if let r = p.report.flatMap(PersonaliseReport.init(json:)) { print("               held-back frames: \(r.summary)") }
        }
        if let w = j.weights { print("  weights \(w) (personalised)") }
        if let e = j.error { print("  error   \(e)") }
        if let b = j.outputBytes { print("  output  \(b) bytes (dubfarm fetch \(j.id) --out FILE)") }
        guard !d.segments.isEmpty else { return }
        var rows = [["SEG", "FRAMES", "STATE", "WORKER", "DONE", "TRIES", "SECONDS", "FACES", "SWAPPED", "NOTE"]]
        for s in d.segments {
            rows.append(["\(s.index)", "\(s.startFrame)-\(s.endFrame - 1)", s.state.rawValue, s.worker ?? "",
                         "\(s.framesDone)/\(s.endFrame - s.startFrame)", "\(s.leases)", s.processSeconds.map { String(format: "%.1f", $0) } ?? "",
                         s.stats.map { "\($0.framesWithFace)/\($0.frames)" } ?? "", s.stats.map { "\($0.framesSwapped)" } ?? "",
                         s.error ?? ""])
        }
        printTable(rows)
        let timed = d.segments.compactMap { s in s.stats?.steps.map { (s.index, $0) } }
        if !timed.isEmpty {
            print("  stage milliseconds per frame:")
            for (index, steps) in timed {
                print("    seg \(index): " + steps.map { "\($0.step) \(String(format: "%.1f", $0.msPerFrame))" }.joined(separator: ", "))
            }
        }
    }
}

struct Jobs: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List jobs, newest first.")
    @Option(name: .long, help: "Only jobs in this state: \(JobState.allCases.map(\.rawValue).joined(separator: ", ")).")
    var state: String?
    @Option(name: .long, help: "At most this many.") var limit: Int = 50
    @OptionGroup var client: ClientOptions

    func run() throws {
        var s: JobState?
        if let state {
            guard let parsed = JobState(rawValue: state) else {
                throw ValidationError("unknown state '\(state)': \(JobState.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            s = parsed
        }
        let jobs = try client.client().call(.jobs(JobsQuery(state: s, limit: limit)), as: [JobView].self)
        if client.json { return try printJSON(jobs) }
        var rows = [["JOB", "STATE", "PRI", "PROGRESS", "SEGMENTS", "VIDEO", "CREATED", "NOTE"]]
        let df = DateFormatter()
        df.dateFormat = "yyyy-MM-dd HH:mm:ss"
        for j in jobs {
            rows.append(["\(j.id)", j.state.rawValue, "\(j.priority)", "\(Int(j.progress * 100))%",
                         "\(j.segments.done)/\(j.segments.total)", j.video, df.string(from: j.createdAt), j.waitingFor ?? ""])
        }
        printTable(rows)
    }
}

struct Workers: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the workers connected to the coordinator.")
    @OptionGroup var client: ClientOptions

    func run() throws {
        let ws = try client.client().call(.workers, as: [WorkerView].self)
        if client.json { return try printJSON(ws) }
        var rows = [["WORKER", "HOST", "STATE", "STAGE", "MODEL", "THREADS", "SEGMENT", "SEGMENTS", "FRAMES", "LAST SEEN"]]
        for w in ws {
            rows.append([w.name, w.host, w.state, w.stage, w.model ?? "", "\(w.threads)", w.current ?? "", "\(w.segmentsDone)", "\(w.framesDone)",
                         String(format: "%.1fs ago", Date().timeIntervalSince(w.lastSeen))])
        }
        printTable(rows)
    }
}

struct Logs: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a job's event history: every state change, worker and reason.")
    @Argument(help: "The job id.") var job: Int64
    @Flag(name: .shortAndLong, help: "Keep printing new events until the job ends.") var follow = false
    @OptionGroup var client: ClientOptions

    func run() throws {
        let c = try client.client()
        var after: Int64 = 0
        let df = ISO8601DateFormatter()
        df.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let page = 1000
        while true {
            let events = try c.call(.events(EventsQuery(job: job, after: after, limit: page)), as: [EventView].self)
            for e in events {
                if client.json { try printJSONLine(e) } else {
                    let subject = e.segment.map { "segment \($0)" } ?? e.kind
                    let change = [e.from, e.to].compactMap { $0 }.joined(separator: " → ")
                    print("\(df.string(from: e.at))  \(subject.padding(toLength: 11, withPad: " ", startingAt: 0)) \(change.padding(toLength: 22, withPad: " ", startingAt: 0)) \(e.worker.map { "[\($0)] " } ?? "")\(e.reason)")
                }
                after = max(after, e.id)
            }
            fflush(nil)
            // A full page: more events are waiting (a long job has thousands); fetch them now.
            if events.count == page { continue }
            guard follow else { return }
            let j = try c.call(.status(job: job), as: JobDetail.self).job
            if j.state.isTerminal && events.isEmpty { return }
            Thread.sleep(forTimeInterval: 0.5)
        }
    }
}

struct Cancel: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Cancel a job; its running segments stop and workers are freed.")
    @Argument(help: "The job id.") var job: Int64
    @OptionGroup var client: ClientOptions
    func run() throws {
        let j = try client.client().call(.cancel(job: job), as: JobView.self)
        if client.json { try printJSON(j) } else { print("job \(j.id) \(j.state)") }
    }
}

struct Retry: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Retry a failed or cancelled job; finished segments are kept.")
    @Argument(help: "The job id.") var job: Int64
    @OptionGroup var client: ClientOptions
    func run() throws {
        let j = try client.client().call(.retry(job: job), as: JobView.self)
        if client.json { try printJSON(j) } else { print("job \(j.id) \(j.state)") }
    }
}

struct Fetch: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Download a finished job's output.")
    @Argument(help: "The job id.") var job: Int64
    @Option(name: .long, help: "Where to write the MP4.") var out: String
    @OptionGroup var client: ClientOptions
    func run() throws {
        try client.client().download(job: job, to: out) { done, total in
            if !client.json && stdoutIsTerminal { printProgressLine("downloading", Double(done) / Double(max(total, 1)), "") }
        }
        if client.json { try printJSON(["job": "\(job)", "out": out]) } else {
            if stdoutIsTerminal { print("") }
            print("output: \(out)")
        }
    }
}

/// Prints rows as aligned columns (first row is the header).
func printTable(_ rows: [[String]]) {
    guard let header = rows.first else { return }
    var widths = header.map(\.count)
    for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
    for r in rows {
        print(r.enumerated().map { i, c in i == r.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }.joined(separator: "  "))
    }
}

/// The trainer's figures on the held-back part of a personalised job's clip (its `done` line).
struct PersonaliseReport: Decodable {
    struct Holdout: Decodable {
        var psnr_before: Double?
        var psnr_after: Double?
    }
    var holdout: Holdout?

    init?(json: String) {
        guard let r = try? JSONDecoder().decode(PersonaliseReport.self, from: Data(json.utf8)) else { return nil }
        self = r
    }

    var summary: String {
        guard let b = holdout?.psnr_before, let a = holdout?.psnr_after else { return "no figures reported" }
        return String(format: "face PSNR %.2f dB before, %.2f dB after (%+.2f dB)", b, a, a - b)
    }
}
