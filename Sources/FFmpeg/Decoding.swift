import CFFmpeg
import DubfarmCore

/// Decodes a whole file's video into `VideoFrame`s, one at a time.
package enum VideoDecoder {
    /// Calls `body` with every frame of `path`'s video stream in presentation order, converted to
    /// `layout` and numbered from 0. Returns the number of frames. Memory does not grow with the
    /// file's length.
    @discardableResult
    package static func decodeFrames(path: String, layout: VideoFrame.Layout, threads: Int = 0,
                                    body: (VideoFrame) throws -> Void) throws -> Int {
        try forEachDecodedFrame(path: path, threads: threads) { frame, index, converter in
            try body(try converter.videoFrame(from: frame, layout: layout, index: index))
            return true
        }
    }

    /// Demuxes and decodes `path`'s video, calling `body(frame, index, converter)` until it returns false.
    static func forEachDecodedFrame(path: String, threads: Int,
                                    _ body: (Frame, Int, FrameConverter) throws -> Bool) throws -> Int {
        let input = try InputFile(path: path)
        guard let v = input.videoStreamIndex() else {
            throw DubfarmError(.badInput, "\(input.name): no video stream (the file holds \(MediaProbe.describeStreams(input)))")
        }
        let st = input.stream(v)
        let par = st.pointee.codecpar.pointee
        guard par.width > 0, par.height > 0, Int(par.width) <= MediaProbe.maxDimension, Int(par.height) <= MediaProbe.maxDimension else {
            throw DubfarmError(.badInput, "\(input.name): unusable picture size \(par.width)x\(par.height)")
        }
        input.discardAll(except: v)
        let decoder = try Decoder(parameters: st.pointee.codecpar, timeBase: st.pointee.time_base, threads: threads, what: input.name)
        let converter = FrameConverter(width: Int(par.width), height: Int(par.height), what: input.name)
        let pkt = Packet()
        let frame = Frame()
        var count = 0
        var stop = false
        let handle: (Frame) throws -> Void = { f in
            guard !stop else { return }
            if try !body(f, count, converter) { stop = true }
            count += 1
        }
        while !stop {
            let r = av_read_frame(input.ctx, pkt.p)
            if r == averrorEOF { break }
            if r < 0 { throw DubfarmError(.badInput, "\(input.name): the file is damaged or truncated after \(count) frames (\(avErrorString(r)))") }
            defer { av_packet_unref(pkt.p) }
            guard Int(pkt.p.pointee.stream_index) == v else { continue }
            try decoder.decode(pkt.p, into: frame, handle)
        }
        if !stop { try decoder.decode(nil, into: frame, handle) }
        return count
    }
}

/// Loads still images.
package enum ImageLoader {
    /// Loads a PNG or JPEG (any still image FFmpeg reads) as an rgb24 frame (index 0).
    package static func load(path: String) throws -> VideoFrame {
        var result: VideoFrame? = nil
        _ = try VideoDecoder.forEachDecodedFrame(path: path, threads: 1) { frame, _, converter in
            result = try converter.videoFrame(from: frame, layout: .rgb24, index: 0)
            return false
        }
        guard let result else { throw DubfarmError(.badInput, "\(fileName(path)): holds no picture") }
        return result
    }
}

/// Plain demuxing of a file's video packets (a reference for checks and tools; the coordinator
/// uses ``SourceIndexer`` and ``SourceVideo``).
package enum VideoDemuxer {
    /// Every packet of `path`'s video stream in decode order, as the demuxer returns it
    /// (pts falls back to dts when missing, as in ``SourceIndexer``).
    package static func packets(path: String) throws -> [EncodedPacket] {
        let input = try InputFile(path: path)
        guard let v = input.videoStreamIndex() else { throw DubfarmError(.badInput, "\(input.name): no video stream") }
        input.discardAll(except: v)
        let pkt = Packet()
        var out: [EncodedPacket] = []
        while true {
            let r = av_read_frame(input.ctx, pkt.p)
            if r == averrorEOF { break }
            if r < 0 { throw DubfarmError(.badInput, "\(input.name): demuxing failed (\(avErrorString(r)))") }
            defer { av_packet_unref(pkt.p) }
            guard Int(pkt.p.pointee.stream_index) == v else { continue }
            var e = Packet.encodedPacket(pkt.p)
            if e.pts == noPTS { e.pts = e.dts }
            if e.dts == noPTS { e.dts = e.pts }
            out.append(e)
        }
        return out
    }
}
