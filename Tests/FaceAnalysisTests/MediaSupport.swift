import DubfarmCore
import Foundation

/// Test-only media access through the `ffmpeg`/`ffprobe` command-line tools.
///
/// Everything that decodes media lives in this file so it can be swapped for the project's own
/// decoder (the FFmpeg wrapper) without touching the tests.
enum TestMedia {
    /// `/work/shared/media` (or `$DUBFARM_MEDIA`).
    static let directory: String = {
        if let d = ProcessInfo.processInfo.environment["DUBFARM_MEDIA"] { return d }
        // Tests/FaceAnalysisTests/MediaSupport.swift → repository root → ../shared/media
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let sibling = repo.deletingLastPathComponent().appendingPathComponent("shared/media").path
        return FileManager.default.fileExists(atPath: sibling) ? sibling : "/work/shared/media"
    }()

    static func path(_ name: String) -> String { directory + "/" + name }

    static var ffmpegAvailable: Bool {
        FileManager.default.isExecutableFile(atPath: "/usr/bin/ffmpeg") || which("ffmpeg") != nil
    }

    private static func which(_ tool: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let p = "\(dir)/\(tool)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }

    /// Width and height of the first video stream.
    static func size(of path: String) throws -> (Int, Int) {
        let out = try run("ffprobe", ["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
                                      "-of", "csv=p=0:s=x", path])
        let parts = String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "x")
        guard parts.count >= 2, let w = Int(parts[0]), let h = Int(parts[1]) else {
            throw DubfarmError(.badInput, "ffprobe gave no size for \(path)")
        }
        return (w, h)
    }

    /// Decodes every frame of a video (or a still image) to rgb24, calling `body` in order.
    static func forEachFrame(_ path: String, extraArgs: [String] = [], _ body: (VideoFrame) throws -> Void) throws {
        let (w, h) = try size(of: path)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: which("ffmpeg") ?? "/usr/bin/ffmpeg")
        p.arguments = ["-v", "error", "-i", path] + extraArgs + ["-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle.nullDevice
        try p.run()
        let fh = pipe.fileHandleForReading
        let frameBytes = w * h * 3
        var buffer = Data()
        var index = 0
        while true {
            let chunk = fh.readData(ofLength: 1 << 20)
            if chunk.isEmpty { break }
            buffer.append(chunk)
            while buffer.count >= frameBytes {
                let bytes = [UInt8](buffer.prefix(frameBytes))
                buffer.removeFirst(frameBytes)
                try body(VideoFrame(width: w, height: h, layout: .rgb24, planes: [bytes], strides: [w * 3], index: index))
                index += 1
            }
        }
        p.waitUntilExit()
    }

    /// All frames of a video (small clips only).
    static func frames(_ path: String) throws -> [VideoFrame] {
        var out: [VideoFrame] = []
        try forEachFrame(path) { out.append($0) }
        return out
    }

    /// A still image as one rgb24 frame.
    static func image(_ path: String) throws -> VideoFrame {
        var out: VideoFrame?
        try forEachFrame(path) { if out == nil { out = $0 } }
        guard let f = out else { throw DubfarmError(.badInput, "ffmpeg decoded no picture from \(path)") }
        return f
    }

    @discardableResult
    private static func run(_ tool: String, _ args: [String]) throws -> Data {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: which(tool) ?? "/usr/bin/\(tool)")
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle.nullDevice
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return data
    }
}
