import DubfarmCore
import FFmpeg

/// A still of a video for people (the dashboard's job page): one frame encoded as JPEG by
/// FFmpeg's `mjpeg` encoder.
package enum Thumbnail {
    /// The JPEG of frame `index` of `path`'s video (the last one when the video is shorter).
    package static func jpeg(path: String, frame index: Int) throws -> [UInt8] {
        try farmErrors {
            var jpeg: [UInt8]?
            var failure: (any Error)?
            let scratch = Frame()
            var last: (width: Int, height: Int)?
            _ = try VideoDecoder.forEachDecodedFrame(path: path, threads: 1) { frame, i, converter in
                last = (frame.width, frame.height)
                guard i >= index else { return true }
                do {
                    let encoder = try VideoEncoder(name: "mjpeg", crf: 0, preset: "", pixelFormat: "yuvj420p", width: frame.width,
                                                   height: frame.height, frameRate: Ratio(25, 1), sampleAspect: Ratio(0, 1),
                                                   color: nil, threads: 1, globalHeader: false, closedGOP: false, what: "thumbnail")
                    let picture = try converter.convert(frame, for: encoder, scratch: scratch)
                    try encoder.encode(picture) { jpeg = $0.bytes }
                    if jpeg == nil { try encoder.encode(nil) { p in if jpeg == nil { jpeg = p.bytes } } }
                } catch { failure = error }
                return false
            }
            if let failure { throw failure }
            guard let jpeg else {
                throw DubfarmError(.badInput, "\(path): no frame \(index) to show" + (last == nil ? " (no picture at all)" : ""))
            }
            return jpeg
        }
    }
}
