import Testing
@testable import DubfarmCore

@Suite("Segment planner")
struct SegmentPlannerTests {
    @Test("10 s is round(10 × fps) frames", arguments: [
        (Rational(24000, 1001), 240), (Rational(25, 1), 250), (Rational(30000, 1001), 300),
        (Rational(30, 1), 300), (Rational(60, 1), 600), (Rational(60000, 1001), 599),
    ])
    func framesPerSegment(rate: Rational, expected: Int) {
        #expect(SegmentPlanner.framesPerSegment(seconds: 10, frameRate: rate) == expected)
    }

    @Test("segments tile the video exactly, cut on absolute indices", arguments: [
        Rational(24000, 1001), Rational(25, 1), Rational(30000, 1001), Rational(30, 1), Rational(60, 1),
    ])
    func tiling(rate: Rational) {
        // One hour and a bit: rounding must never accumulate.
        let frames = Int(3_600.37 * rate.value)
        let plan = SegmentPlanner.plan(frameCount: frames, frameRate: rate, segmentSeconds: 10)
        let len = SegmentPlanner.framesPerSegment(seconds: 10, frameRate: rate)
        #expect(plan.first?.frames.lowerBound == 0)
        #expect(plan.last?.frames.upperBound == frames)
        for (k, s) in plan.enumerated() {
            #expect(s.index == k)
            #expect(s.frames.lowerBound == k * len)
            if k + 1 < plan.count {
                #expect(s.frames.count == len)
                #expect(plan[k + 1].frames.lowerBound == s.frames.upperBound)
            }
        }
        #expect(plan.reduce(0) { $0 + $1.frames.count } == frames)
    }

    @Test("speaker-long: 629 frames at 25 fps are 250 + 250 + 129")
    func speakerLong() {
        let plan = SegmentPlanner.plan(frameCount: 629, frameRate: Rational(25, 1), segmentSeconds: 10)
        #expect(plan.map(\.frames.count) == [250, 250, 129])
    }

    @Test("an input under 10 s is one short segment")
    func shortInput() {
        let plan = SegmentPlanner.plan(frameCount: 135, frameRate: Rational(30, 1), segmentSeconds: 10)
        #expect(plan == [SegmentSpan(index: 0, frames: 0..<135)])
        #expect(SegmentPlanner.plan(frameCount: 0, segmentFrames: 250).isEmpty)
        #expect(SegmentPlanner.plan(frameCount: 1, segmentFrames: 250).map(\.frames) == [0..<1])
    }

    @Test("an exact multiple leaves no empty tail")
    func exactMultiple() {
        let plan = SegmentPlanner.plan(frameCount: 500, segmentFrames: 250)
        #expect(plan.map(\.frames) == [0..<250, 250..<500])
    }

    @Test("context is clamped to the video")
    func context() {
        #expect(SegmentPlanner.contextRange(of: 0..<250, context: 5, frameCount: 629) == 0..<255)
        #expect(SegmentPlanner.contextRange(of: 250..<500, context: 5, frameCount: 629) == 245..<505)
        #expect(SegmentPlanner.contextRange(of: 500..<629, context: 5, frameCount: 629) == 495..<629)
    }

    @Test("audio window covers the frames plus margin at 16 kHz")
    func audio() {
        let r = SegmentPlanner.audioSamples(for: 250..<500, frameRate: Rational(25, 1), marginSeconds: 0.25)
        #expect(r == Int64(16_000 * 9.75)..<Int64(16_000 * 20.25))
        let first = SegmentPlanner.audioSamples(for: 0..<10, frameRate: Rational(25, 1), marginSeconds: 0.25)
        #expect(first.lowerBound == -4_000)
    }
}

@Suite("Packet index")
struct PacketIndexTests {
    /// An IBBP-style stream: keyframe every `gop` frames, B-frames reordered.
    static func stream(frames: Int, gop: Int) -> PacketIndex {
        // Decode order for a GOP "I P B B P B B": pts of P comes before its B-frames in decode order.
        var entries: [PacketIndex.Entry] = []
        var start = 0
        while start < frames {
            let end = min(start + gop, frames)
            var order: [Int] = [start]
            var f = start + 1
            while f < end {
                let p = min(f + 2, end - 1)
                order.append(p)
                for b in f..<p { order.append(b) }
                f = p + 1
            }
            for (i, pts) in order.enumerated() {
                entries.append(.init(pts: Int64(pts * 512), dts: Int64((start + i - 2) * 512), duration: 512,
                                     position: Int64(entries.count * 1000), size: 1000, isKey: pts == start))
            }
            start = end
        }
        return PacketIndex(entries: entries)
    }

    @Test("presentation order is recovered from reordered packets")
    func order() {
        let idx = Self.stream(frames: 100, gop: 12)
        #expect(idx.frameCount == 100)
        for f in 0..<100 { #expect(idx.pts(ofFrame: f) == Int64(f * 512)) }
    }

    @Test("a window starts at the keyframe at or before its first frame and holds every frame it needs")
    func window() {
        let idx = Self.stream(frames: 300, gop: 12)
        for range in [0..<50, 50..<100, 96..<97, 250..<300, 13..<14] {
            let w = idx.window(for: range, context: 3)
            #expect(idx.entries[w.packets.lowerBound].isKey)
            #expect(w.decodedFrames == SegmentPlanner.contextRange(of: range, context: 3, frameCount: 300))
            let sent = Set(w.packets.map { idx.entries[$0].pts })
            for f in w.decodedFrames { #expect(sent.contains(idx.pts(ofFrame: f))) }
            #expect(w.framePTS == w.decodedFrames.map { Int64($0 * 512) })
            // No more than one GOP of lead-in.
            #expect(w.packets.count <= w.decodedFrames.count + 12 + 2)
        }
    }

    @Test("longest keyframe interval", arguments: [(12, 12), (250, 250), (1000, 300)])
    func keyframeInterval(gop: Int, expected: Int) {
        #expect(Self.stream(frames: 300, gop: gop).longestKeyframeInterval == expected)
    }

    @Test("round trip through bytes; damage is reported")
    func persistence() throws {
        let idx = Self.stream(frames: 77, gop: 10)
        #expect(try PacketIndex(decoding: idx.encoded()) == idx)
        var bad = idx.encoded()
        bad.removeLast(3)
        #expect(throws: DubfarmError.self) { try PacketIndex(decoding: bad) }
    }

    @Test("a partial result splits a segment after the frames returned; none or all is not a split")
    func split() {
        let parts = SegmentPlanner.split(250..<500, afterFrames: 37)
        #expect(parts?.finished == 250..<287 && parts?.remainder == 287..<500)
        #expect(SegmentPlanner.split(250..<500, afterFrames: 0) == nil)
        #expect(SegmentPlanner.split(250..<500, afterFrames: 250) == nil)
        #expect(SegmentPlanner.split(250..<500, afterFrames: 251) == nil)
        #expect(SegmentPlanner.split(250..<500, afterFrames: -1) == nil)
    }

    @Test("split segments still refine their plan (a retried job keeps them); gaps, overlaps and lost cuts do not")
    func refines() {
        let plan = SegmentPlanner.plan(frameCount: 629, segmentFrames: 250)
        #expect(SegmentPlanner.refines(plan.map(\.frames), plan: plan, frameCount: 629))
        // Segment 0 split at 100, its remainder numbered last: any order.
        #expect(SegmentPlanner.refines([0..<100, 250..<500, 500..<629, 100..<250], plan: plan, frameCount: 629))
        #expect(!SegmentPlanner.refines([0..<100, 250..<500, 500..<629], plan: plan, frameCount: 629), "a gap")
        #expect(!SegmentPlanner.refines([0..<100, 90..<250, 250..<500, 500..<629], plan: plan, frameCount: 629), "an overlap")
        #expect(!SegmentPlanner.refines([0..<300, 300..<500, 500..<629], plan: plan, frameCount: 629), "the plan's cut at 250 is gone")
        #expect(!SegmentPlanner.refines(plan.map(\.frames), plan: plan, frameCount: 700), "not the whole video")
        #expect(!SegmentPlanner.refines([], plan: plan, frameCount: 629))
    }
}
