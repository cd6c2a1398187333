/// Where every compressed frame of the input's video stream lies, and which are keyframes.
///
/// Built once by the coordinator when it plans a job (one demux pass, no decode) and kept in the
/// media store, so cutting a segment is reading byte ranges, not demuxing again.
package struct PacketIndex: Sendable, Hashable {
    package struct Entry: Sendable, Hashable {
        package var pts: Int64
        package var dts: Int64
        package var duration: Int64
        /// Byte offset of the packet in the input file.
        package var position: Int64
        package var size: Int32
        package var isKey: Bool
        package init(pts: Int64, dts: Int64, duration: Int64, position: Int64, size: Int32, isKey: Bool) {
            self.pts = pts
            self.dts = dts
            self.duration = duration
            self.position = position
            self.size = size
            self.isKey = isKey
        }
    }

    /// Packets in decode (file) order.
    package let entries: [Entry]
    /// `presentationOrder[f]` is the entry index of frame `f` (frames numbered in presentation order).
    package let presentationOrder: [Int]

    package init(entries: [Entry]) {
        self.entries = entries
        presentationOrder = entries.indices.sorted { a, b in
            entries[a].pts != entries[b].pts ? entries[a].pts < entries[b].pts : a < b
        }
    }

    /// The number of frames.
    package var frameCount: Int { entries.count }

    /// Presentation timestamp of frame `f`.
    package func pts(ofFrame f: Int) -> Int64 { entries[presentationOrder[f]].pts }

    /// What to send a worker so it can decode `frames`.
    package struct Window: Sendable, Hashable {
        /// Entry indices (decode order) to send: from the keyframe at or before the first needed
        /// frame to the last packet any needed frame depends on.
        package var packets: Range<Int>
        /// The frames decoded and handed to the stage: the segment plus its context.
        package var decodedFrames: Range<Int>
        /// Presentation timestamps of `decodedFrames`, in order: how the worker tells them apart
        /// from frames it decodes only as references.
        package var framePTS: [Int64]
    }

    /// The packet window for `frames` with `context` frames on each side (clamped to the video).
    package func window(for frames: Range<Int>, context: Int) -> Window {
        precondition(!frames.isEmpty && frames.upperBound <= frameCount, "frames \(frames) outside 0..<\(frameCount)")
        let decoded = SegmentPlanner.contextRange(of: frames, context: context, frameCount: frameCount)
        var lo = Int.max, hi = Int.min
        for f in decoded {
            let e = presentationOrder[f]
            lo = min(lo, e)
            hi = max(hi, e)
        }
        var start = lo
        while start > 0 && !entries[start].isKey { start -= 1 }
        return Window(packets: start..<(hi + 1), decodedFrames: decoded, framePTS: decoded.map { pts(ofFrame: $0) })
    }

    /// The longest run of frames, in decode order, between a keyframe and the next (or the end).
    package var longestKeyframeInterval: Int {
        var longest = 0, last = 0
        for (i, e) in entries.enumerated() where e.isKey && i > 0 {
            longest = max(longest, i - last)
            last = i
        }
        return max(longest, entries.count - last)
    }

    /// Whether the first packet is a keyframe (a stream that starts mid-GOP is re-cut).
    package var startsWithKeyframe: Bool { entries.first?.isKey ?? false }

    // MARK: Persistence

    static let magic: [UInt8] = Array("DFPI".utf8)

    package func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 16 + entries.count * 37)
        w.raw(Self.magic)
        w.u32(UInt32(entries.count))
        for e in entries {
            w.i64(e.pts)
            w.i64(e.dts)
            w.i64(e.duration)
            w.i64(e.position)
            w.i32(e.size)
            w.bool(e.isKey)
        }
        return w.bytes
    }

    package init(decoding bytes: [UInt8]) throws {
        var r = ByteReader(bytes)
        let m = [try r.u8(), try r.u8(), try r.u8(), try r.u8()]
        guard m == Self.magic else { throw DubfarmError(.io, "packet index file is damaged (bad magic)") }
        let n = try r.count(minElementSize: 37, max: Int(Int32.max))
        var entries: [Entry] = []
        entries.reserveCapacity(n)
        for _ in 0..<n {
            entries.append(Entry(pts: try r.i64(), dts: try r.i64(), duration: try r.i64(),
                                 position: try r.i64(), size: try r.i32(), isKey: try r.bool()))
        }
        try r.expectEnd()
        self.init(entries: entries)
    }
}
