import ArgumentParser
import DubfarmCore
import Foundation
import MediaPipeline

/// `dubfarm probe FILE…`: what the farm sees in a file before anyone submits it.
struct Probe: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show what the farm sees in a video: streams, frames, frame rate, rotation, keyframes, and how it would be cut.",
        discussion: """
            Reads the file here, as the coordinator will (every packet is counted; nothing is sent). \
            'plan' says whether the input is re-encoded once before it is cut — a variable frame rate \
            is re-timed on its own timeline at the nominal rate, keyframes far apart get one where \
            each segment starts — and how many frames and segments the farm will dub.

              dubfarm probe talk.mp4
              dubfarm probe *.mkv --json
            """)

    @Argument(help: "Video files to probe.") var files: [String]
    @Option(name: .long, help: "Segment length in seconds, as the job would use (default: 10).") var segmentSeconds: Double = 10
    @Option(name: .long, help: "Keyframes further apart than this many seconds make the input re-encoded first (the coordinator's segments.max_keyframe_interval; default 10).")
    var maxKeyframeInterval: Double = 10
    @Flag(name: .long, help: "Print machine-readable JSON (an array, one object per file).") var json = false

    /// One file's report (the `--json` output).
    struct Report: Codable {
        var info: MediaInfo
        var startsWithKeyframe: Bool
        var longestKeyframeInterval: Int
        /// Why it would be re-encoded first; nil: it is cut as it is.
        var recut: String?
        var frames: Int
        var segments: Int
    }

    func validate() throws {
        guard segmentSeconds > 0, segmentSeconds <= 3600 else { throw ValidationError("--segment-seconds must be in (0, 3600]") }
        guard maxKeyframeInterval >= 0.5, maxKeyframeInterval <= 3600 else { throw ValidationError("--max-keyframe-interval must be in [0.5, 3600]") }
    }

    func run() throws {
        var reports: [Report] = []
        for file in files {
            let info = try MediaProbe.probe(path: file)
            let indexed = try SourceIndexer.index(path: file)
            let reason = RecutReason.decide(info: indexed.info, index: indexed.index, maxKeyframeSeconds: maxKeyframeInterval)
            let frames = RecutReason.frameCount(indexed.info, reason)
            let segments = SegmentPlanner.plan(frameCount: frames, frameRate: indexed.info.frameRate, segmentSeconds: segmentSeconds).count
            let report = Report(info: info, startsWithKeyframe: indexed.index.startsWithKeyframe,
                                longestKeyframeInterval: indexed.index.longestKeyframeInterval, recut: reason?.description,
                                frames: frames, segments: segments)
            if json { reports.append(report) } else { print(Self.describe(file, report, video: indexed.info)) }
        }
        if json { try printJSON(reports) }
    }

    static func describe(_ file: String, _ r: Report, video v: VideoStreamInfo) -> String {
        let fps = { (x: Double) in String(format: x == x.rounded() ? "%.0f" : "%.3f", x) }
        var lines = ["\(file)  (\(r.info.formatName), \(r.info.fileSize) bytes)"]
        lines.append("  video  \(v.codecName) \(v.width)x\(v.height) \(v.pixelFormat), stream \(v.streamIndex)"
                     + (v.videoStreams > 1 ? " (the default of \(v.videoStreams) video streams; the farm dubs this one)" : ""))
        let rate = v.isVariableFrameRate
            ? "variable frame rate (nominal \(fps(v.frameRate.value)) fps, average \(fps(Double(v.frameCount) / max(v.timelineDuration, 1e-9))) fps)"
            : "\(fps(v.frameRate.value)) fps"
        lines.append("         \(v.frameCount) frames, \(rate), \(String(format: "%.2f", v.timelineDuration)) s"
                     + (v.hiddenFrames > 0 ? "; \(v.hiddenFrames) more hidden by an edit list" : ""))
        lines.append("         rotation \(v.rotation)°; keyframes: \(r.startsWithKeyframe ? "first frame is one" : "the first frame is NOT one"), longest interval \(r.longestKeyframeInterval) frames"
                     + (v.hasPresentationTimestamps ? "" : "; no presentation timestamps"))
        if let a = r.info.audio {
            lines.append("  audio  \(a.codecName) \(a.sampleRate) Hz \(a.channels) ch" + (a.duration.map { String(format: ", %.2f s", $0) } ?? ""))
        } else {
            lines.append("  audio  none")
        }
        lines.append("  plan   " + (r.recut.map { "re-cut first: \($0)" } ?? "cut as it is (no re-encoding)"))
        lines.append("         \(r.frames) frames in \(r.segments) segment\(r.segments == 1 ? "" : "s")")
        return lines.joined(separator: "\n")
    }
}
