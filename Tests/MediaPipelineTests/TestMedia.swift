import Foundation
import Testing
import DubfarmCore

/// Locates the shared test media (`../shared/media` from the package root) and makes scratch dirs.
enum TestMedia {
    static let packageRoot: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static let directory: URL = packageRoot.deletingLastPathComponent().appendingPathComponent("shared/media")
    static var available: Bool { FileManager.default.fileExists(atPath: path("speaker-long.mp4")) }
    static let skipReason: Comment = "test media not found at ../shared/media"

    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    /// A fresh temporary directory, removed by the caller via `cleanup`.
    static func scratch(_ tag: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dubfarm-media-\(tag)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.path
    }
    /// Removes a scratch dir (kept, and its path printed, when DUBFARM_KEEP_TEST_MEDIA is set).
    static func cleanup(_ dir: String) {
        if ProcessInfo.processInfo.environment["DUBFARM_KEEP_TEST_MEDIA"] != nil {
            print("kept \(dir)")
            return
        }
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Path of a command-line tool, if installed.
    static func tool(_ name: String) -> String? {
        for dir in ["/usr/bin", "/usr/local/bin", "/bin"] where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
            return "\(dir)/\(name)"
        }
        return nil
    }

    /// Runs a tool and returns its standard output.
    @discardableResult
    static func run(_ tool: String, _ args: [String]) throws -> String {
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
    static func ffprobeVideoPackets(_ path: String) throws -> Int? {
        guard let ffprobe = tool("ffprobe") else { return nil }
        let s = try run(ffprobe, ["-v", "error", "-select_streams", "v:0", "-count_packets",
                                  "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", path])
        return Int(s.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
