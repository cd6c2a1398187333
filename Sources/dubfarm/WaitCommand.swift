import ArgumentParser
import DubfarmCore
import FarmClient
import FarmProtocol
import Foundation

/// A job to wait for, and where to download it when done.
struct WaitTarget {
    var id: Int64
    var out: String?
}

/// Follows `targets` until every one has ended, downloading each finished job with an `out` as
/// soon as it is done. One job: a progress bar (or a line per change off a terminal); several: a
/// summary line and a line per job that ends. Every call goes through `session`, so the wait
/// survives the coordinator going away for its patience. Returns the final views, in order.
func waitForJobs(_ session: ReconnectingClient, _ targets: [WaitTarget], json: Bool) throws -> [JobView] {
    var final: [Int64: JobView] = [:]
    var lastLine: [Int64: String] = [:]
    var rates: [Int64: RateEstimator] = [:]
    let single = targets.count == 1
    while final.count < targets.count {
        var views: [JobView] = []
        for t in targets {
            if let done = final[t.id] { views.append(done); continue }
            let detail = try session.resilient { try $0.call(.status(job: t.id), as: JobDetail.self) }
            let j = detail.job
            rates[t.id, default: RateEstimator()].add(frames: j.framesDone)
            views.append(j)
            if !json {
                let plain = "job \(j.id)\(j.name.map { " (\($0))" } ?? "") \(j.state) segments \(j.segments.done)/\(j.segments.total)"
                    + (j.state == .personalising ? " personalising: \(j.personalisation?.state ?? "?") step \(j.personalisation?.step ?? 0)" : "")
                if single && stdoutIsTerminal {
                    drawProgress(j, fps: rates[t.id]?.fps)
                } else if !stdoutIsTerminal || j.state.isTerminal {
                    if plain != lastLine[t.id] {
                        if stdoutIsTerminal { print("\r\u{1B}[2K", terminator: "") }
                        print(plain)
                        fflush(nil)
                    }
                }
                lastLine[t.id] = plain
            }
            guard j.state.isTerminal else { continue }
            if single && stdoutIsTerminal && !json { print("") }
            final[t.id] = j
            if j.state == .done, let out = t.out {
                try session.resilient { c in
                    try c.download(job: j.id, to: out) { done, total in
                        if !json && stdoutIsTerminal { printProgressLine("downloading \(j.id)", Double(done) / Double(max(total, 1)), "") }
                    }
                }
                if !json {
                    if stdoutIsTerminal { print("") }
                    print("output: \(out)")
                }
            }
        }
        if !single && !json && stdoutIsTerminal && final.count < targets.count {
            let frames = views.reduce(0) { $0 + ($1.frames ?? 0) }, done = views.reduce(0) { $0 + ($1.state == .done ? ($1.frames ?? 0) : $1.framesDone) }
            let fps = rates.values.compactMap(\.fps).reduce(0, +)
            printProgressLine("\(final.count)/\(targets.count) jobs", frames > 0 ? Double(done) / Double(frames) : 0,
                              fps > 0 ? String(format: "%.1f fps", fps) : "")
        }
        if final.count < targets.count { Thread.sleep(forTimeInterval: 0.5) }
    }
    if !single && !json && stdoutIsTerminal { print("\r\u{1B}[2K", terminator: "") }
    return targets.map { final[$0.id]! }
}

/// Throws ``JobEnded`` (exit code 1) naming every job that did not finish.
func requireAllDone(_ jobs: [JobView]) throws {
    let bad = jobs.filter { $0.state != .done }
    guard !bad.isEmpty else { return }
    throw JobEnded(message: bad.map { "job \($0.id) \($0.state): \($0.error ?? "no reason recorded")" }.joined(separator: "\n"))
}

func drawProgress(_ j: JobView, fps: Double?) {
    let segs = "segments \(j.segments.done)/\(j.segments.total)"
    let frames = j.frames.map { "frames \(j.framesDone)/\($0)" } ?? "frames ?"
    let rate = fps.map { String(format: "%.1f fps", $0) } ?? "-- fps"
    var eta = ""
    if let f = j.frames, let r = fps, r > 0 { eta = "ETA " + formatDuration(Double(f - j.framesDone) / r) }
    if j.state == .personalising, let p = j.personalisation {
        printProgressLine("job \(j.id)", p.progress, "personalising: \(p.summary)")
    } else {
        printProgressLine("job \(j.id)", j.progress, "\(j.state)  \(segs)  \(frames)  \(rate)  \(eta)")
    }
}

/// Jobs named on the command line and/or selected by labels (`cancel 12 13`, `--label lang=es`).
struct JobSelection: ParsableArguments {
    @Argument(help: "Job ids.") var jobs: [Int64] = []
    @Option(name: .customLong("label"), help: ArgumentHelp("Every job with this label (repeat: all of them).", valueName: "KEY=VALUE"))
    var labels: [String] = []
    @Option(name: .long, help: ArgumentHelp("Every job with this name.", valueName: "NAME")) var name: String?

    var isEmpty: Bool { jobs.isEmpty && labels.isEmpty && name == nil }

    func validate() throws {
        guard !isEmpty else { throw ValidationError("name the jobs: JOB ids, --label KEY=VALUE or --name NAME") }
        do { _ = try JobLabels.parse(labels) } catch let e as DubfarmError { throw ValidationError("--label: \(e.message)") }
    }

    /// The selected jobs' views (ids first, in the order given, then the labelled ones, oldest
    /// first), each once; `states` keeps only those. An id that does not exist is an error.
    func resolve(_ c: ControlClient, states: Set<JobState>? = nil) throws -> [JobView] {
        var out: [JobView] = []
        var seen = Set<Int64>()
        for id in jobs where seen.insert(id).inserted {
            out.append(try c.call(.status(job: id), as: JobDetail.self).job)
        }
        if !labels.isEmpty || name != nil {
            let selector = try JobLabels.parse(labels)
            let found = try c.call(.jobs(JobsQuery(state: nil, limit: 10_000, labels: selector, name: name)), as: [JobView].self)
            for j in found.reversed() where seen.insert(j.id).inserted { out.append(j) }
            if found.isEmpty {
                let what = (labels.isEmpty ? [] : ["label \(JobLabels.format(selector))"]) + (name.map { ["name '\($0)'"] } ?? [])
                throw DubfarmError(.notFound, "no job has \(what.joined(separator: " and ")) (see `dubfarm jobs`)")
            }
        }
        return states.map { s in out.filter { s.contains($0.state) } } ?? out
    }
}

struct Wait: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Wait for jobs to finish, showing progress; optionally download each result.",
        discussion: """
            Exits 0 when every job is done, 1 when one failed or was cancelled. While waiting, a \
            coordinator that goes away (restarted, killed, a new `local up`) is reconnected to for \
            --reconnect seconds; the jobs carry on meanwhile.

            Placeholders in --out: {job} (the id), {stem} (the video's name without extension), \
            {audio}, {lang} (the job's lang label), {name}.

            Examples:
              dubfarm wait 12
              dubfarm wait --label show=pilot --out 'out/{stem}.{lang}.mp4'
            """)
    @OptionGroup var selection: JobSelection
    @Option(name: .long, help: ArgumentHelp("Download each finished job here (a pattern when several).", valueName: "PATH"))
    var out: String?
    @OptionGroup var reconnect: ReconnectOption
    @OptionGroup var client: ClientOptions

    func run() throws {
        let session = try client.reconnectingClient(patience: reconnect.reconnect)
        let jobs = try session.resilient { try selection.resolve($0) }
        let outs = try outputPaths(out, for: jobs)
        let final = try waitForJobs(session, zip(jobs, outs).map { WaitTarget(id: $0.id, out: $1) }, json: client.json)
        if client.json { try final.count == 1 && selection.labels.isEmpty && selection.name == nil ? printJSON(final[0]) : printJSON(final) }
        else if final.count > 1 { print("\(final.filter { $0.state == .done }.count) of \(final.count) jobs done") }
        try requireAllDone(final)
    }
}

/// Where each job goes for `wait --out` and `fetch --out`: the pattern expanded per job
/// (placeholders as in ``OutputPattern``, plus {job}); a fixed path only for a single job.
func outputPaths(_ out: String?, for jobs: [JobView]) throws -> [String?] {
    guard let out else { return jobs.map { _ in nil } }
    let pattern = try OutputPattern(out)
    if jobs.count > 1 && pattern.isConstant {
        throw DubfarmError(.badInput, "--out names one file for \(jobs.count) jobs; put {job}, {lang} or {name} in it, e.g. --out 'out/{stem}.{lang}.mp4'")
    }
    var seen: [String: Int64] = [:]
    return try jobs.enumerated().map { i, j in
        let lang = j.labels?["lang"] ?? DubLanguage.guess(fileName: j.audio)
        let path = try pattern.expand(video: j.video, audio: j.audio, lang: lang, name: j.name, index: i + 1, job: j.id)
        if let other = seen[path] {
            throw DubfarmError(.badInput, "--out gives \(path) for both job \(other) and job \(j.id); put {job} in it to tell them apart")
        }
        seen[path] = j.id
        try checkWritableOutput(path)
        return path
    }
}

/// Refuses an `--out` path whose directory cannot be written, before anything is downloaded.
func checkWritableOutput(_ path: String) throws {
    let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
    guard FileManager.default.isWritableFile(atPath: dir) else {
        throw DubfarmError(.localFile, "--out \(path): cannot write to \(dir) (does the directory exist?)")
    }
}

struct SetPriority: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-priority",
        abstract: "Change jobs' priority (higher runs first).",
        discussion: "Segments not yet handed out follow the new priority at once; a finished job keeps it for a retry. Example: dubfarm set-priority 12 13 --to 10 (negative: --to=-5)")
    @OptionGroup var selection: JobSelection
    @Option(name: .long, help: ArgumentHelp("The new priority.", valueName: "N")) var to: Int
    @OptionGroup var client: ClientOptions

    func run() throws {
        let c = try client.client()
        var changed: [JobView] = []
        for j in try selection.resolve(c) {
            changed.append(try c.call(.setPriority(PriorityChange(job: j.id, priority: to)), as: JobView.self))
        }
        if client.json { return try printJSON(changed) }
        for j in changed { print("job \(j.id) priority \(j.priority)") }
    }
}
