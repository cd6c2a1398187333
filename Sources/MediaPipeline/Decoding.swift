import DubfarmCore
import FFmpeg

/// Decodes a whole file's video into `VideoFrame`s, one at a time.
package enum VideoDecoder {
    /// Calls `body` with every frame of `path`'s video stream in presentation order, converted to
    /// `layout` and numbered from 0. Returns the number of frames. Memory does not grow with the
    /// file's length.
    @discardableResult
    package static func decodeFrames(path: String, layout: VideoFrame.Layout, threads: Int = 0,
                                     body: (VideoFrame) throws -> Void) throws -> Int {
        try farmErrors {
            try forEachDecodedFrame(path: path, threads: threads) { frame, index, converter in
                try body(VideoFrame(try converter.picture(from: frame, layout: Picture.Layout(layout)), index: index))
                return true
            }
        }
    }

    /// Demuxes and decodes `path`'s video, calling `body(frame, index, converter)` until it returns false.
    static func forEachDecodedFrame(path: String, threads: Int,
                                    _ body: (Frame, Int, FrameConverter) throws -> Bool) throws -> Int {
        let input = try InputFile(path: path)
        guard let v = input.videoStreamIndex() else {
            throw DubfarmError(.badInput, "\(input.name): no video stream (the file holds \(input.describeStreams()))")
        }
        let st = input.stream(v)
        guard st.width > 0, st.height > 0, st.width <= MediaProbe.maxDimension, st.height <= MediaProbe.maxDimension else {
            throw DubfarmError(.badInput, "\(input.name): unusable picture size \(st.width)x\(st.height)")
        }
        input.discardAll(except: v)
        let decoder = try Decoder(input: input, stream: v, threads: threads)
        let converter = FrameConverter(width: st.width, height: st.height, what: input.name)
        let pkt = Packet()
        let frame = Frame()
        var count = 0
        var stop = false
        let handle: (Frame) throws -> Void = { f in
            guard !stop else { return }
            if try !body(f, count, converter) { stop = true }
            count += 1
        }
        while !stop, try input.read(into: pkt, failure: { "\(input.name): the file is damaged or truncated after \(count) frames (\($0))" }) {
            guard pkt.streamIndex == v else { continue }
            try decoder.decode(pkt, into: frame, handle)
        }
        if !stop { try decoder.decode(nil, into: frame, handle) }
        return count
    }
}

/// Loads still images.
package enum ImageLoader {
    /// Loads a PNG or JPEG (any still image FFmpeg reads) as an rgb24 frame (index 0).
    package static func load(path: String) throws -> VideoFrame {
        try farmErrors {
            var result: VideoFrame? = nil
            _ = try VideoDecoder.forEachDecodedFrame(path: path, threads: 1) { frame, _, converter in
                result = VideoFrame(try converter.picture(from: frame, layout: .rgb24), index: 0)
                return false
            }
            guard let result else { throw DubfarmError(.badInput, "\(fileName(path)): holds no picture") }
            return result
        }
    }
}

/// Plain demuxing of a file's video packets (a reference for checks and tools; the coordinator
/// uses ``SourceIndexer`` and ``SourceVideo``).
package enum VideoDemuxer {
    /// Every packet of `path`'s video stream in decode order, as the demuxer returns it
    /// (pts falls back to dts when missing, as in ``SourceIndexer``).
    package static func packets(path: String) throws -> [EncodedPacket] {
        try farmErrors {
            let input = try InputFile(path: path)
            guard let v = input.videoStreamIndex() else { throw DubfarmError(.badInput, "\(input.name): no video stream") }
            input.discardAll(except: v)
            let pkt = Packet()
            var out: [EncodedPacket] = []
            while try input.read(into: pkt, failure: { "\(input.name): demuxing failed (\($0))" }) {
                guard pkt.streamIndex == v else { continue }
                var e = EncodedPacket(pkt)
                if e.pts == noTimestamp { e.pts = e.dts }
                if e.dts == noTimestamp { e.dts = e.pts }
                out.append(e)
            }
            return out
        }
    }
}
