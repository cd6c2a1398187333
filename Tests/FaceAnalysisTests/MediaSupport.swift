import DubfarmCore
import Foundation
import MediaPipeline

/// Test media, decoded by the project's own decoder (the FFmpeg wrapper).
enum TestMedia {
    /// `../shared/media` beside the repository (or `$DUBFARM_MEDIA`).
    static let directory: String = {
        if let d = ProcessInfo.processInfo.environment["DUBFARM_MEDIA"] { return d }
        // Tests/FaceAnalysisTests/MediaSupport.swift → repository root → ../shared/media
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return repo.deletingLastPathComponent().appendingPathComponent("shared/media").path
    }()

    static func path(_ name: String) -> String { directory + "/" + name }

    private struct Enough: Error {}

    /// Decodes the frames of a video (at most `limit`) to rgb24, calling `body` in order.
    static func forEachFrame(_ path: String, limit: Int? = nil, _ body: (VideoFrame) throws -> Void) throws {
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
    static func frames(_ path: String) throws -> [VideoFrame] {
        var out: [VideoFrame] = []
        try forEachFrame(path) { out.append($0) }
        return out
    }

    /// A still image as one rgb24 frame.
    static func image(_ path: String) throws -> VideoFrame {
        try ImageLoader.load(path: path)
    }
}
