import DubfarmCore
import Foundation
import MediaPipeline
import Testing

/// The shared test media (`../shared/media` beside the repository, or `$DUBFARM_MEDIA`), scratch
/// directories, and the command-line tools tests compare against. One definition for every test
/// target.
package enum TestMedia {
    /// The repository's root.
    package static let packageRoot: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    /// The media directory.
    package static let directory: URL = {
        if let d = ProcessInfo.processInfo.environment["DUBFARM_MEDIA"] { return URL(fileURLWithPath: d) }
        return packageRoot.deletingLastPathComponent().appendingPathComponent("shared/media")
    }()
    /// Whether the media is there (tests that need it are skipped, with ``skipReason``, when not).
    package static var available: Bool { FileManager.default.fileExists(atPath: path("speaker-long.mp4")) }
    package static let skipReason: Comment = "test media not found at ../shared/media"

    /// The path of the media file `name` (`speaker-c.mp4`, `train/…`).
    package static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    /// A fresh temporary directory, removed by the caller via ``cleanup(_:)``.
    package static func scratch(_ tag: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dubfarm-media-\(tag)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.path
    }

    /// Removes a scratch dir (kept, and its path printed, when DUBFARM_KEEP_TEST_MEDIA is set).
    package static func cleanup(_ dir: String) {
        if ProcessInfo.processInfo.environment["DUBFARM_KEEP_TEST_MEDIA"] != nil {
            print("kept \(dir)")
            return
        }
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Path of a command-line tool, if installed.
    package static func tool(_ name: String) -> String? {
        for dir in ["/usr/bin", "/usr/local/bin", "/bin"] where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
            return "\(dir)/\(name)"
        }
        return nil
    }

    /// Runs a tool and returns its standard output.
    @discardableResult
    package static func run(_ tool: String, _ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw DubfarmError(.internalError, "\(tool) \(args.joined(separator: " ")) failed") }
        return String(decoding: data, as: UTF8.self)
    }

    /// ffprobe's packet count of the first video stream, if ffprobe is installed.
    package static func ffprobeVideoPackets(_ path: String) throws -> Int? {
        guard let ffprobe = tool("ffprobe") else { return nil }
        let s = try run(ffprobe, ["-v", "error", "-select_streams", "v:0", "-count_packets",
                                  "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", path])
        return Int(s.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    private struct Enough: Error {}

    /// Decodes the frames of a video (at most `limit`) to rgb24 with the farm's own decoder,
    /// calling `body` in order.
    package static func forEachFrame(_ path: String, limit: Int? = nil, _ body: (VideoFrame) throws -> Void) throws {
        var n = 0
        do {
            _ = try VideoDecoder.decodeFrames(path: path, layout: .rgb24) { frame in
                if let limit, n >= limit { throw Enough() }
                try body(frame)
                n += 1
            }
        } catch is Enough {}
    }

    /// All frames of a video (small clips only).
    package static func frames(_ path: String) throws -> [VideoFrame] {
        var out: [VideoFrame] = []
        try forEachFrame(path) { out.append($0) }
        return out
    }

    /// A still image as one rgb24 frame.
    package static func image(_ path: String) throws -> VideoFrame {
        try ImageLoader.load(path: path)
    }
}
