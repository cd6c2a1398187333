import ArgumentParser
import DubfarmCore
import FarmClient
import FarmProtocol
import Foundation
import MediaPipeline

struct Submit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Submit a video and its dub tracks (or a manifest of jobs); prints the job ids.",
        discussion: """
            One job per dub track: `--audio` may be given several times (or `--audio-dir DIR` takes \
            every audio file in DIR), and the video is uploaded once and shared. Files are uploaded \
            to the coordinator in checksummed chunks, so it may run on another machine; a file the \
            farm already has is not sent again, and an upload that was cut off goes on where it \
            stopped.

            Each track's language comes from its file name (talk.es.wav, dub-de.wav, pt-BR.wav) or \
            from --lang, once per --audio in the same order; it becomes the job's label lang=… and \
            fills {lang} in --out. Placeholders in --out: {stem} (the video's name without its \
            extension), {audio} (the track's), {lang}, {name}, {index} (1, 2, …).

            --manifest FILE submits a batch from CSV or YAML: columns video, audio, face, priority, \
            out, labels (k=v;k2=v2), name, lang, stage, model; paths relative to the manifest. The \
            whole manifest is checked first (files, media, labels, outputs), and if any row is bad \
            nothing is submitted and every problem is listed with its row. --dry-run checks and \
            prints the jobs without submitting.

            With --wait the command follows the jobs and exits 0 when all are done, 1 when one \
            failed or was cancelled; with --out it also downloads each result as it finishes. \
            Waiting survives the coordinator going away (see --reconnect).

            Examples:
              dubfarm submit talk.mp4 --audio dub-es.wav --wait --out talk-es.mp4
              dubfarm submit talk.mp4 --audio-dir dubs/ --label show=pilot --wait --out 'out/{stem}.{lang}.mp4'
              dubfarm submit --manifest season1.csv --dry-run
            """)

    @Argument(help: "The video to dub (any container and codec FFmpeg reads).")
    var video: String?

    @Option(name: .long, help: ArgumentHelp("A dub track: replaces the video's audio, fitted to the video's duration. Repeat it for more languages (one job each).", valueName: "FILE"))
    var audio: [String] = []

    @Option(name: .long, help: ArgumentHelp("Every audio file in DIR (wav, mp3, m4a, aac, flac, ogg, opus) is a dub track.", valueName: "DIR"))
    var audioDir: String?

    @Option(name: .long, help: ArgumentHelp("The language of each --audio, in the same order (es, de, pt-BR). Default: from each file's name.", valueName: "TAG"))
    var lang: [String] = []

    @Option(name: .long, help: "A picture of the face to swap in (optional).")
    var face: String?

    @Option(name: .long, help: ArgumentHelp("Higher runs first (default 0; change it later with set-priority).", valueName: "N"))
    var priority: Int?

    @Option(name: .long, help: ArgumentHelp("A name for the job, shown by jobs and status and matched by --name (several tracks: 'NAME (es)').", valueName: "NAME"))
    var name: String?

    @Option(name: .customLong("label"), help: ArgumentHelp("A label KEY=VALUE to find the job by (jobs, wait, cancel, retry, fetch --label); repeat for more.", valueName: "KEY=VALUE"))
    var labels: [String] = []

    @Option(name: .long, help: ArgumentHelp("Submit the jobs of a CSV or YAML manifest (instead of VIDEO --audio …).", valueName: "FILE"))
    var manifest: String?

    @Flag(name: .long, help: "Check everything and print the jobs, but submit nothing.")
    var dryRun = false

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

    @Option(name: .long, help: ArgumentHelp("Download each result here when done (implies --wait); with several tracks a pattern such as 'out/{stem}.{lang}.mp4'.", valueName: "PATH"))
    var out: String?

    @Flag(name: .long, help: "Wait for the jobs to finish, showing progress.")
    var wait = false

    @OptionGroup var reconnect: ReconnectOption
    @OptionGroup var client: ClientOptions

    func validate() throws {
        if manifest != nil {
            guard video == nil, audio.isEmpty, audioDir == nil, lang.isEmpty, face == nil, out == nil, name == nil else {
                throw ValidationError("--manifest takes the jobs from the file: give no VIDEO, --audio, --audio-dir, --lang, --face, --name or --out with it")
            }
            guard personalise == nil else { throw ValidationError("--personalise is not available with --manifest") }
        } else {
            guard let video else { throw ValidationError("give the VIDEO to dub and its --audio (or --manifest FILE)") }
            guard !audio.isEmpty || audioDir != nil else { throw ValidationError("give the dub track with --audio FILE (or --audio-dir DIR)") }
            for (what, path) in [("video", video)] + audio.map { ("audio", $0) } + (face.map { [("face", $0)] } ?? []) {
                try Self.checkReadable(path, what)
            }
            if let d = audioDir {
                var isDir: ObjCBool = false
                guard FileManager.default.fileExists(atPath: d, isDirectory: &isDir), isDir.boolValue else {
                    throw ValidationError("--audio-dir \(d): no such directory")
                }
            }
        }
        _ = try labelSet()
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
    }

    static func checkReadable(_ path: String, _ what: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw ValidationError("\(path): no such \(what) file")
        }
        guard !isDir.boolValue else { throw ValidationError("\(path): is a directory, not a \(what) file") }
        guard FileManager.default.isReadableFile(atPath: path) else { throw ValidationError("\(path): not readable") }
    }

    func labelSet() throws -> [String: String] {
        do { return try JobLabels.parse(labels) } catch let e as DubfarmError { throw ValidationError("--label: \(e.message)") }
    }

    /// The jobs to submit, every problem found before anything is uploaded.
    func planned() throws -> [PlannedSubmission] {
        let common = try labelSet()
        var plans: [PlannedSubmission]
        if let manifest {
            plans = try SubmissionManifest.load(path: manifest).map { row in
                var p = row
                p.labels = common.merging(row.labels) { _, own in own }
                p.priority = p.priority ?? priority
                p.stage = p.stage ?? stage
                p.model = p.model ?? model
                return p
            }
        } else {
            var tracks = audio
            if let d = audioDir {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: d)) ?? []
                let found = TrackExpansion.audioFiles(inDirectoryListing: names).map { URL(fileURLWithPath: d).appendingPathComponent($0).path }
                guard !found.isEmpty else {
                    throw DubfarmError(.badInput, "--audio-dir \(d): no audio files in it (\(TrackExpansion.audioExtensions.sorted().joined(separator: ", ")))")
                }
                tracks += found
            }
            plans = try TrackExpansion.expand(video: video!, audio: tracks, langs: lang, face: face, out: out, name: name, labels: common,
                                              priority: priority, stage: stage, model: model)
        }
        // A batch is refused whole, before anything is uploaded; a single job is checked by the
        // coordinator, which keeps the refused job on record with its reason.
        if manifest != nil || plans.count > 1 { try Self.checkMedia(plans, source: manifest) }
        for p in plans {
            if let o = p.out {
                let dir = URL(fileURLWithPath: o).deletingLastPathComponent().path
                guard FileManager.default.isWritableFile(atPath: dir) else {
                    throw DubfarmError(.localFile, "\(p.row.map { "row \($0): " } ?? "")--out \(o): cannot write to \(dir) (does the directory exist?)")
                }
            }
        }
        return plans
    }

    /// Probes every distinct file once (FFmpeg, on this machine), so a batch is refused whole
    /// before anything is uploaded: the video must have frames, a track must have sound.
    static func checkMedia(_ plans: [PlannedSubmission], source: String?) throws {
        var problems: [String] = []
        var checked: [String: String?] = [:]
        func check(_ path: String, video: Bool) -> String? {
            if let known = checked[path] { return known }
            var problem: String?
            do {
                let info = try MediaProbe.probe(path: path, requireVideo: video)
                if video, (info.video?.frameCount ?? 0) == 0 { problem = "\(path): the video stream has no frames" }
                if !video {
                    if info.audio == nil { problem = "\(path): no audio stream (a dub track must be audio)" }
                    else if let d = info.audio?.duration, d <= 0 { problem = "\(path): the audio track is empty" }
                }
            } catch let e as DubfarmError {
                problem = e.message.hasPrefix(path) ? e.message : "\(path): \(e.message)"
            } catch {
                problem = "\(path): \(error)"
            }
            checked[path] = problem
            return problem
        }
        for p in plans {
            let row = p.row.map { "row \($0): " } ?? ""
            if let e = check(p.video, video: true) { problems.append(row + e) }
            if let e = check(p.audio, video: false) { problems.append(row + e) }
        }
        guard problems.isEmpty else {
            let head = source.map { "\($0): \(problems.count) problem\(problems.count == 1 ? "" : "s"), nothing was submitted:" }
                ?? "nothing was submitted:"
            throw DubfarmError(.badInput, ([head] + problems.map { "  " + $0 }).joined(separator: "\n"))
        }
    }

    func run() throws {
        let plans = try planned()
        if dryRun {
            if client.json { return try printJSON(plans.map(PlanView.init)) }
            var rows = [["#", "VIDEO", "AUDIO", "LANG", "NAME", "LABELS", "PRI", "OUT"]]
            for (i, p) in plans.enumerated() {
                rows.append(["\(p.row ?? i + 1)", p.video, p.audio, p.lang ?? "", p.name ?? "", JobLabels.format(p.labels),
                             "\(p.priority ?? 0)", p.out ?? ""])
            }
            printTable(rows)
            print("\(plans.count) job\(plans.count == 1 ? "" : "s") checked; nothing submitted (--dry-run)")
            return
        }
        let session = try client.reconnectingClient(patience: reconnect.reconnect)
        let c = session.client
        _ = try c.call(.hello, as: ServerHello.self)
        let progress = UploadProgress(quiet: client.json)
        var uploaded: [String: String] = [:]
        func upload(_ path: String) throws -> String {
            if let id = uploaded[path] { return id }
            let id = try c.upload(path: path) { progress.show(path, $0, $1) }
            uploaded[path] = id
            return id
        }
        let fileName = { (p: String) in URL(fileURLWithPath: p).lastPathComponent }
        let personaliseRequest = personalise.map { PersonaliseRequest(seconds: $0, fallback: personaliseFallback, workers: personaliseWorkers ?? 1) }
        var submitted: [(PlannedSubmission, JobView)] = []
        for p in plans {
            do {
                let spec = SubmitSpec(video: try upload(p.video), audio: try upload(p.audio), face: try p.face.map(upload),
                                      videoName: fileName(p.video), audioName: fileName(p.audio), faceName: p.face.map(fileName),
                                      priority: p.priority ?? 0, stage: p.stage, model: p.model, personalise: personaliseRequest,
                                      name: p.name, labels: p.labels.isEmpty ? nil : p.labels)
                submitted.append((p, try c.call(.submit(spec), as: JobView.self)))
            } catch let e as DubfarmError where !submitted.isEmpty {
                progress.done()
                let ids = submitted.map { "\($0.1.id)" }.joined(separator: ", ")
                throw DubfarmError(e.code, "\(p.row.map { "row \($0): " } ?? "")\(p.audio): \(e.message)\n(jobs \(ids) were submitted before this one; the rest were not)")
            }
        }
        progress.done()
        let jobs = submitted.map(\.1)
        if !(wait || plans.contains { $0.out != nil }) {
            if client.json { return try jobs.count == 1 ? printJSON(jobs[0]) : printJSON(jobs) }
            if jobs.count == 1 || !stdoutIsTerminal {
                for j in jobs { print(j.id) }
            } else {
                for (p, j) in submitted { print("job \(j.id)  \(fileName(p.audio))" + (p.lang.map { "  \($0)" } ?? "")) }
            }
            return
        }
        if !client.json {
            print(jobs.count == 1 ? "job \(jobs[0].id) submitted" : "jobs \(jobs.map { "\($0.id)" }.joined(separator: ", ")) submitted")
        }
        let final = try waitForJobs(session, submitted.map { WaitTarget(id: $0.1.id, out: $0.0.out) }, json: client.json)
        if client.json { try final.count == 1 ? printJSON(final[0]) : printJSON(final) }
        try requireAllDone(final)
        if !client.json {
            for (p, j) in zip(plans, final) where p.out == nil {
                print("job \(j.id) done; download it with: dubfarm fetch \(j.id) --out FILE")
            }
        }
    }

    /// `--dry-run --json`: one planned job.
    struct PlanView: Encodable {
        var row: Int?, video: String, audio: String, face: String?, lang: String?, name: String?, labels: [String: String], priority: Int?, out: String?
        init(_ p: PlannedSubmission) {
            row = p.row; video = p.video; audio = p.audio; face = p.face; lang = p.lang; name = p.name; labels = p.labels
            priority = p.priority; out = p.out
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

