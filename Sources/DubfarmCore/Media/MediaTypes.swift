/// An exact ratio of two integers: frame rates and time bases.
package struct Rational: Sendable, Hashable, Codable, CustomStringConvertible {
    package var num: Int
    package var den: Int
    package init(_ num: Int, _ den: Int) {
        self.num = num
        self.den = den
    }
    package var value: Double { den == 0 ? 0 : Double(num) / Double(den) }
    package var inverted: Rational { Rational(den, num) }
    package var description: String { den == 1 ? "\(num)" : "\(num)/\(den)" }

    package func write(_ w: inout ByteWriter) {
        w.int(num)
        w.int(den)
    }
    package static func read(_ r: inout ByteReader) throws -> Rational {
        Rational(try r.int(), try r.int())
    }
}

/// What a decoder needs to know about a compressed video stream, free of FFmpeg types.
package struct CodecParameters: Sendable, Hashable {
    /// FFmpeg's codec name, e.g. `h264`.
    package var codecName: String
    package var extradata: [UInt8]
    package var width: Int
    package var height: Int
    /// FFmpeg's pixel format name, e.g. `yuv420p`.
    package var pixelFormat: String
    /// The time base packet timestamps are expressed in.
    package var timeBase: Rational
    package var frameRate: Rational
    package var sampleAspect: Rational
    package var profile: Int
    package var level: Int
    package var colorRange: Int
    package var colorSpace: Int
    package var colorPrimaries: Int
    package var colorTransfer: Int

    package init(codecName: String, extradata: [UInt8] = [], width: Int, height: Int, pixelFormat: String,
                timeBase: Rational, frameRate: Rational, sampleAspect: Rational = Rational(0, 1),
                profile: Int = -99, level: Int = -99, colorRange: Int = 0, colorSpace: Int = 2,
                colorPrimaries: Int = 2, colorTransfer: Int = 2) {
        self.codecName = codecName
        self.extradata = extradata
        self.width = width
        self.height = height
        self.pixelFormat = pixelFormat
        self.timeBase = timeBase
        self.frameRate = frameRate
        self.sampleAspect = sampleAspect
        self.profile = profile
        self.level = level
        self.colorRange = colorRange
        self.colorSpace = colorSpace
        self.colorPrimaries = colorPrimaries
        self.colorTransfer = colorTransfer
    }

    package func write(_ w: inout ByteWriter) {
        w.string(codecName)
        w.blob(extradata)
        w.int(width)
        w.int(height)
        w.string(pixelFormat)
        timeBase.write(&w)
        frameRate.write(&w)
        sampleAspect.write(&w)
        for v in [profile, level, colorRange, colorSpace, colorPrimaries, colorTransfer] { w.int(v) }
    }

    package static func read(_ r: inout ByteReader) throws -> CodecParameters {
        var p = CodecParameters(
            codecName: try r.string(max: 64), extradata: try r.bytesArray(max: 1 << 20),
            width: try r.int(in: 1...16384, "width"), height: try r.int(in: 1...16384, "height"),
            pixelFormat: try r.string(max: 64), timeBase: try Rational.read(&r), frameRate: try Rational.read(&r))
        p.sampleAspect = try Rational.read(&r)
        p.profile = try r.int()
        p.level = try r.int()
        p.colorRange = try r.int()
        p.colorSpace = try r.int()
        p.colorPrimaries = try r.int()
        p.colorTransfer = try r.int()
        return p
    }
}

/// One compressed packet, owned by Swift.
package struct EncodedPacket: Sendable, Hashable {
    package var pts: Int64
    package var dts: Int64
    package var duration: Int64
    package var isKey: Bool
    package var data: [UInt8]

    package init(pts: Int64, dts: Int64, duration: Int64, isKey: Bool, data: [UInt8]) {
        self.pts = pts
        self.dts = dts
        self.duration = duration
        self.isKey = isKey
        self.data = data
    }
}

/// A run of compressed packets of one video stream with what it takes to decode them.
///
/// The coordinator sends one to a worker (the source packets of a segment, no re-encode), and
/// the worker sends one back (the segment, encoded with the job's settings). The media store
/// keeps finished segments in this format (see ``encoded()``).
package struct PacketBundle: Sendable, Hashable {
    package var codec: CodecParameters
    /// Packets in decode order.
    package var packets: [EncodedPacket]

    package init(codec: CodecParameters, packets: [EncodedPacket]) {
        self.codec = codec
        self.packets = packets
    }

    package var payloadBytes: Int { packets.reduce(0) { $0 + $1.data.count } }

    static let magic: [UInt8] = Array("DFPB".utf8)
    static let version: UInt16 = 1

    /// The bundle as bytes: `DFPB`, version, codec parameters, packets.
    package func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: payloadBytes + packets.count * 32 + 256)
        write(&w)
        return w.bytes
    }

    package func write(_ w: inout ByteWriter) {
        w.raw(Self.magic)
        w.u16(Self.version)
        codec.write(&w)
        w.u32(UInt32(packets.count))
        for p in packets {
            w.i64(p.pts)
            w.i64(p.dts)
            w.i64(p.duration)
            w.bool(p.isKey)
            w.blob(p.data)
        }
    }

    /// Parses ``encoded()``'s output; throws on anything malformed.
    package init(decoding bytes: [UInt8]) throws {
        var r = ByteReader(bytes)
        self = try Self.read(&r)
        try r.expectEnd()
    }

    package static func read(_ r: inout ByteReader) throws -> PacketBundle {
        let m = [try r.u8(), try r.u8(), try r.u8(), try r.u8()]
        guard m == magic else { throw DubfarmError(.protocolViolation, "malformed packet bundle: bad magic") }
        let v = try r.u16()
        guard v == version else { throw DubfarmError(.protocolViolation, "packet bundle version \(v) is not supported (expected \(version))") }
        let codec = try CodecParameters.read(&r)
        let n = try r.count(minElementSize: 29)
        var packets: [EncodedPacket] = []
        packets.reserveCapacity(n)
        for _ in 0..<n {
            let pts = try r.i64(), dts = try r.i64(), dur = try r.i64(), key = try r.bool()
            packets.append(EncodedPacket(pts: pts, dts: dts, duration: dur, isKey: key, data: try r.bytesArray()))
        }
        return PacketBundle(codec: codec, packets: packets)
    }
}

/// The fixed encoder settings of a job's output: every segment of a job is encoded alike so the
/// stitch is a stream copy.
package struct EncoderSettings: Sendable, Hashable, Codable {
    /// FFmpeg encoder name (`libx264`).
    package var codec: String
    package var crf: Int
    package var preset: String
    /// Output pixel format name (`yuv420p`).
    package var pixelFormat: String

    package init(codec: String = "libx264", crf: Int = 18, preset: String = "veryfast", pixelFormat: String = "yuv420p") {
        self.codec = codec
        self.crf = crf
        self.preset = preset
        self.pixelFormat = pixelFormat
    }

    package func write(_ w: inout ByteWriter) {
        w.string(codec)
        w.int(crf)
        w.string(preset)
        w.string(pixelFormat)
    }
    package static func read(_ r: inout ByteReader) throws -> EncoderSettings {
        EncoderSettings(codec: try r.string(max: 64), crf: try r.int(in: 0...63, "crf"),
                        preset: try r.string(max: 64), pixelFormat: try r.string(max: 64))
    }
}

/// A window of the dub track as 16 kHz mono float PCM, for lip sync.
package struct AudioWindow: Sendable, Hashable {
    package static let sampleRate = 16_000
    /// Absolute index (at 16 kHz, from the start of the dub track) of `samples[0]`; may be negative.
    package var startSample: Int64
    package var samples: [Float]
    package init(startSample: Int64, samples: [Float]) {
        self.startSample = startSample
        self.samples = samples
    }
}

/// How the dub track was fitted to the video's duration.
package enum AudioFit: Sendable, Hashable, Codable, CustomStringConvertible {
    case exact
    case padded(seconds: Double)
    case trimmed(seconds: Double)

    package var description: String {
        switch self {
        case .exact: return "exact"
        case .padded(let s): return "padded with \(formatSeconds(s)) s of silence"
        case .trimmed(let s): return "trimmed by \(formatSeconds(s)) s"
        }
    }
}

func formatSeconds(_ s: Double) -> String {
    let r = (s * 1000).rounded() / 1000
    return String(r)
}
