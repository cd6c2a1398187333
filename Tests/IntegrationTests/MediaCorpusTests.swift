import DubfarmCore
import FarmProtocol
import FarmTestSupport
import Foundation
import LocalFarm
import Testing

/// One input of the media corpus and what the farm must make of it.
struct CorpusCase: Sendable, CustomStringConvertible {
    enum Outcome: Sendable {
        /// The job completes; its output has the input's presented frames (or, for a variable
        /// frame rate, the input's timeline at the nominal rate) at the input's times.
        case completes
        /// `submit` exits 2 naming the file and saying this.
        case refused(String)
    }
    var file: String
    var what: String
    var outcome: Outcome = .completes
    /// Also run through the dub stage (the face must be found in the upright picture).
    var dub = true
    /// The width the output must have (the default video stream's), when ffprobe's first video
    /// stream is not the one the farm must use.
    var width: Int?
    var description: String { "\(file) (\(what))" }
}

/// Makes the media corpus from the shared media with the `ffmpeg` program: nothing binary is
/// committed. Every case starts from the first 2 s of speaker-c.mp4 at 320×320.
enum MediaCorpus {
    static let ffmpeg = "/usr/bin/ffmpeg"
    static var available: Bool {
        FileManager.default.isExecutableFile(atPath: ffmpeg) && FileManager.default.isExecutableFile(atPath: "/usr/bin/ffprobe")
    }

    static func make(in dir: URL) throws -> [CorpusCase] {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        func ff(_ args: [String]) throws { try runFFmpeg(args, timeout: 300) }
        let source = media("speaker-c.mp4")
        let clip = ["-t", "2", "-i", source, "-vf", "scale=320:320"]
        let x264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
        // The cases, each also a row of README's input table.
        try ff(clip + x264 + ["-g", "25", "-bf", "2", "-c:a", "aac", path("base.mp4")])
        let base = path("base.mp4")
        var cases: [CorpusCase] = []
        func add(_ c: CorpusCase, _ args: [String]) throws {
            try ff(args + [path(c.file)])
            cases.append(c)
        }
        try add(CorpusCase(file: "h264-bframes.mkv", what: "H.264 with B-frames in Matroska"),
                clip + x264 + ["-bf", "3", "-c:a", "libopus"])
        try add(CorpusCase(file: "hevc-bframes.mkv", what: "HEVC with B-frames in Matroska"),
                clip + ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "bframes=3:log-level=error", "-c:a", "libopus"])
        try add(CorpusCase(file: "vp9.webm", what: "VP9 in WebM"),
                clip + ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus"])
        try add(CorpusCase(file: "av1.webm", what: "AV1 in WebM"),
                clip + ["-c:v", "libsvtav1", "-preset", "12", "-c:a", "libopus"])
        // Frames dropped irregularly, timestamps kept (a phone's variable frame rate).
        try add(CorpusCase(file: "variable-rate.mp4", what: "variable frame rate (frames dropped irregularly)"),
                ["-i", base, "-vf", "select='not(eq(mod(n\\,7)\\,3)+eq(mod(n\\,11)\\,5))'", "-fps_mode", "passthrough"] + x264 + ["-c:a", "copy"])
        // As a phone records: the sensor's pixels turned, the display matrix turning them upright.
        for (degrees, turn) in [(90, "transpose=1"), (180, "hflip,vflip"), (270, "transpose=2")] {
            try ff(["-i", base, "-vf", turn] + x264 + ["-c:a", "copy", path("turned-\(degrees).mp4")])
            try add(CorpusCase(file: "rotated-\(degrees).mp4", what: "pixels turned, display matrix \(degrees)°"),
                    ["-i", path("turned-\(degrees).mp4"), "-c", "copy", "-metadata:s:v:0", "rotate=\(degrees)"])
        }
        try add(CorpusCase(file: "hevc-10bit.mkv", what: "10-bit 4:2:0 HEVC"),
                clip + ["-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le", "-x265-params", "log-level=error", "-c:a", "aac"])
        try add(CorpusCase(file: "yuv422.mp4", what: "4:2:2 H.264"),
                clip + ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv422p", "-c:a", "aac"])
        try add(CorpusCase(file: "yuv444.mp4", what: "4:4:4 H.264"),
                clip + ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv444p", "-c:a", "aac"])
        try add(CorpusCase(file: "odd-size.mp4", what: "an odd width and height (321×241)",
                           outcome: .refused("even width and height")),
                ["-t", "2", "-i", source, "-vf", "scale=321:241", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv444p", "-c:a", "aac"])
        try add(CorpusCase(file: "hevc-open-gop.mkv", what: "open-GOP HEVC (CRA keyframes)"),
                clip + ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "open-gop=1:keyint=20:min-keyint=20:bframes=3:log-level=error", "-c:a", "aac"])
        try add(CorpusCase(file: "60fps.mp4", what: "60 frames per second"),
                clip + x264 + ["-r", "60", "-c:a", "aac"])
        try add(CorpusCase(file: "raw.h264", what: "a raw H.264 elementary stream (no timestamps)"),
                ["-i", base, "-an", "-c:v", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264"])
        try add(CorpusCase(file: "mpeg-ts.ts", what: "MPEG transport stream"),
                ["-i", base, "-c", "copy", "-f", "mpegts"])
        // A transport stream cut at a packet boundary in the middle of a GOP: its first video
        // packets are not a keyframe.
        let ts = try Data(contentsOf: URL(fileURLWithPath: path("mpeg-ts.ts")))
        try ts.suffix(from: 188 * (ts.count / 188 / 3)).write(to: URL(fileURLWithPath: path("non-key-start.ts")))
        cases.append(CorpusCase(file: "non-key-start.ts", what: "a stream whose first packets are not a keyframe"))
        try add(CorpusCase(file: "mpeg-ps.mpg", what: "MPEG program stream, MPEG-2 video"),
                clip + ["-c:v", "mpeg2video", "-q:v", "3", "-c:a", "mp2", "-f", "vob"])
        // Stream copy from 0.3 s: the copy starts at the keyframe before, and the MOV's edit list
        // hides the frames before 0.3 s.
        try add(CorpusCase(file: "edit-list.mov", what: "MOV with an edit list that trims the start"),
                ["-ss", "0.3", "-i", base, "-c", "copy"])
        try add(CorpusCase(file: "two-video-streams.mkv", what: "two video streams (the second is the default)", width: 320),
                ["-i", base, "-f", "lavfi", "-i", "testsrc=s=160x120:r=25:d=2", "-map", "1:v", "-map", "0:v", "-map", "0:a",
                 "-c:v:0", "libx264", "-c:v:1", "copy", "-c:a", "copy", "-disposition:v:0", "0", "-disposition:v:1", "default"])
        return cases
    }

    /// Every clip of `../shared/media/train/`: MP4, Matroska and MPEG program streams from the wild.
    static func trainingClips() -> [CorpusCase] {
        let dir = TestMedia.directory.appendingPathComponent("train")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { !$0.hasSuffix(".md") }.sorted().map { CorpusCase(file: "train/\($0)", what: "training clip", dub: false) }
    }
}

/// What ffprobe (independent of our own prober) says of a file's first video stream.
struct ProbedVideo {
    /// Presented frames: what a player shows (edit lists applied), counted by decoding.
    var frames: Int
    /// Presentation times of those frames, in seconds.
    var times: [Double]
    var rotation: Int
    var width: Int
    /// Nominal frame rate.
    var rate: Double
    var audioDuration: Double?

    static func probe(_ path: String) throws -> ProbedVideo {
        let r = try ProcessControl.run("/usr/bin/ffprobe", [
            "-v", "error", "-select_streams", "v:0", "-show_entries",
            "frame=best_effort_timestamp_time:stream=r_frame_rate,width:stream_side_data=rotation", "-of", "json", path], timeout: 300)
        guard r.status == 0, let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else {
            throw TestTimeout(description: "ffprobe failed on \(path): \(r.stderr)")
        }
        let frames = (json["frames"] as? [[String: Any]]) ?? []
        let times = frames.compactMap { ($0["best_effort_timestamp_time"] as? String).flatMap(Double.init) }
        let stream = ((json["streams"] as? [[String: Any]]) ?? []).first ?? [:]
        let rateParts = ((stream["r_frame_rate"] as? String) ?? "0/1").split(separator: "/").compactMap { Double($0) }
        let side = (stream["side_data_list"] as? [[String: Any]]) ?? []
        let rotation = side.compactMap { $0["rotation"] as? Int }.first ?? 0
        let audio = try ProcessControl.run("/usr/bin/ffprobe", ["-v", "error", "-select_streams", "a:0", "-show_entries",
                                                                "stream=duration", "-of", "csv=p=0", path], timeout: 60)
        return ProbedVideo(frames: frames.count, times: times, rotation: ((rotation % 360) + 360) % 360,
                           width: stream["width"] as? Int ?? 0,
                           rate: rateParts.count == 2 && rateParts[1] > 0 ? rateParts[0] / rateParts[1] : 0,
                           audioDuration: Double(audio.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
    }

    /// Whether ffprobe gave every frame a time (a raw elementary stream has none).
    var hasTimes: Bool { times.count == frames }

    /// Whether consecutive frames lie one nominal frame apart (within half a frame); a stream
    /// without times is taken as evenly spaced at its nominal rate.
    var isEven: Bool {
        guard hasTimes else { return true }
        let t = times.sorted()
        return rate > 0 && zip(t, t.dropFirst()).allSatisfy { abs(($1 - $0) * rate - 1) <= 0.5 }
    }

    /// Seconds from the first frame's start to the last frame's end (at the nominal rate).
    var duration: Double {
        guard rate > 0 else { return 0 }
        guard hasTimes else { return Double(frames) / rate }
        guard let first = times.min(), let last = times.max() else { return 0 }
        return last - first + 1 / rate
    }
}

extension Integration {
    /// Issue 16: files from phones, screen recorders and download tools go through both stages
    /// frame-exact, with the input's timing, or are refused at submit with the reason.
    @Suite("Media corpus", .serialized, .enabled(if: haveMedia && MediaCorpus.available, "needs ../shared/media, ffmpeg and ffprobe"))
    struct MediaCorpusTests {
        @Test("every corpus case and every training clip: frame-exact at the input's times through passthrough; faces found through dub; or refused naming the file")
        func corpus() async throws {
            let farm = try await TestFarm()
            defer { farm.shutdown() }
            try farm.startCoordinator()
            try farm.startWorker("pass1")
            try farm.startWorker("pass2")
            try farm.startWorker("dub1", stage: "dub")
            try farm.waitForWorkers(3, "workers connected", timeout: 60)
            let dir = farm.dir.appendingPathComponent("corpus")
            let cases = try MediaCorpus.make(in: dir) + MediaCorpus.trainingClips()
            func input(_ c: CorpusCase) -> String {
                c.file.hasPrefix("train/") ? media(c.file) : dir.appendingPathComponent(c.file).path
            }
            var jobs: [(CorpusCase, stage: String, job: Int64)] = []
            for c in cases {
                switch c.outcome {
                case .refused(let reason):
                    let r = try dubfarm(["submit", input(c), "--audio", media("dub-1.wav"), "--coordinator", farm.controlEndpoint,
                                         "--stage", "passthrough", "--timeout", "60"], timeout: 120)
                    #expect(r.status == 2, "\(c): exit \(r.status), expected a refusal\n\(r.err)")
                    #expect(r.err.contains(URL(fileURLWithPath: c.file).lastPathComponent) && r.err.contains(reason),
                            "\(c): the refusal must name the file and say '\(reason)': \(r.err)")
                case .completes:
                    for stage in c.dub ? ["passthrough", "dub"] : ["passthrough"] {
                        jobs.append((c, stage, try farm.submit(input(c), audio: media("dub-1.wav"), stage: stage)))
                    }
                }
            }
            for (c, stage, job) in jobs {
                let detail = try farm.wait(job: job, timeout: 600)
                guard detail.job.state == .done else {
                    Issue.record("\(c) through \(stage): job \(job) \(detail.job.state): \(detail.job.error ?? "")")
                    continue
                }
                let source = try ProbedVideo.probe(input(c))
                let out = try ProbedVideo.probe(farm.output(job))
                let fps = out.rate
                // Evenly spaced frames are kept one for one; an uneven timeline (frames dropped or
                // hidden) is re-timed at the nominal rate (docs/architecture.md).
                let expected = source.isEven ? source.frames : Int((source.duration * source.rate - 0.01).rounded(.up))   // ffprobe rounds times to µs
                #expect(out.frames == expected, "\(c) through \(stage): \(out.frames) frames, the input shows \(source.frames)")
                // Never a sped-up or slowed-down picture: the output lasts as long as the input.
                #expect(abs(out.duration - source.duration) <= 1.001 / fps,
                        "\(c) through \(stage): lasts \(out.duration) s, the input \(source.duration) s")
                // Frame n at n / fps; for a constant rate that is the input's frame n's time.
                let t0 = out.times.first ?? 0
                #expect(out.times.enumerated().allSatisfy { abs($0.element - t0 - Double($0.offset) / fps) < 0.5 / fps },
                        "\(c) through \(stage): the output's frames are not evenly spaced at \(fps) fps")
                if source.isEven, let s0 = source.times.min() {
                    let shifted = source.times.sorted().map { $0 - s0 }
                    #expect(zip(shifted, out.times.map { $0 - t0 }).allSatisfy { abs($0 - $1) < 0.5 / fps },
                            "\(c) through \(stage): frame times differ from the input's")
                }
                if let width = c.width { #expect(out.width == width, "\(c) through \(stage): the output is \(out.width) wide, the default stream \(width)") }
                #expect(out.rotation == source.rotation, "\(c) through \(stage): rotation \(out.rotation)°, the input has \(source.rotation)°")
                if let audio = out.audioDuration {
                    #expect(abs(audio - Double(out.frames) / fps) <= 1 / fps,
                            "\(c) through \(stage): audio lasts \(audio) s, the video \(Double(out.frames) / fps) s")
                } else {
                    Issue.record("\(c) through \(stage): the output has no audio")
                }
                let withFace = detail.segments.compactMap(\.stats).reduce(0) { $0 + $1.framesWithFace }
                print("corpus: \(c.file) through \(stage): \(source.frames) frames shown\(source.isEven ? "" : " unevenly") over \(String(format: "%.3f", source.duration)) s"
                      + " -> \(out.frames) frames over \(String(format: "%.3f", out.duration)) s, rotation \(out.rotation)°"
                      + (stage == "dub" ? ", a face in \(withFace)" : ""))
                if stage == "dub" {
                    #expect(withFace == out.frames, "\(c) through dub: a face in \(withFace) of \(out.frames) frames (the upright picture shows one in every frame)")
                }
            }
        }
    }
}
