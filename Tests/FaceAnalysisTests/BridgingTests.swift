import DubfarmCore
@testable import FaceAnalysis
import FarmTestSupport
import Foundation
import Testing

@Suite struct GroupingTests {
    @Test func groupsSimilarBoxesAndDropsSmallOnesInsideBetterOnes() {
        let face = (0..<5).map { FaceBox(x: 100 + Double($0), y: 50, width: 80, height: 80) }
        let lone = [FaceBox(x: 300, y: 300, width: 40, height: 40)]
        let inner = (0..<2).map { _ in FaceBox(x: 120, y: 70, width: 30, height: 30) }
        let g = groupRectangles(face + lone + inner, groupThreshold: 1, eps: 0.2)
        // The face group (5 members) survives, averaged and rounded; the lone box (1 ≤ threshold)
        // is dropped; the small pair inside the face box is dropped as the face has more support.
        #expect(g.count == 1)
        #expect(g.first?.box == FaceBox(x: 102, y: 50, width: 80, height: 80))
        #expect(g.first?.neighbors == 5)
    }
}

@Suite(.enabled(if: TestModels.faceReady, "needs opencv-data, libdlib-data, ffmpeg and ../shared/media"))
struct BridgingTests {
    /// Frames the detector misses (simulated: 11–12 and 30–39) get the face bridged from their
    /// neighbours when the gap is short (≤ maxGap = 4): interpolated; of the 10-frame gap only
    /// the frames within 4 of a detection are bridged (held); a black frame (20) never is.
    @Test func briefMissesAreBridged() throws {
        var frames: [VideoFrame] = []
        try TestMedia.forEachFrame(TestMedia.path("speaker-c.mp4"), limit: 45) { frames.append($0) }
        let f = frames[20]
        frames[20] = VideoFrame(width: f.width, height: f.height, layout: .rgb24,
                                planes: [[UInt8](repeating: 0, count: f.planes[0].count)], strides: f.strides, index: 20)
        let a = TestModels.analyzer
        let missed: Set<Int> = [11, 12, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39]
        let tracker = FaceTracker(analyzer: a) { frame, near in
            missed.contains(frame.index) ? nil : a.analyze(frame, near: near)
        }
        var out: [TrackedFrame] = []
        for f in frames { out += tracker.push(f) }
        out += tracker.flush()
        let pattern = out.map { $0.face == nil ? "-" : ($0.face!.detected ? "D" : "b") }.joined()
        print("bridging (D detected, b bridged, - none):", pattern, tracker.stats)
        #expect(out.count == 45)
        let expected = String(repeating: "D", count: 11) + "bb" + String(repeating: "D", count: 7) + "-"
            + String(repeating: "D", count: 9) + "bbbb--bbbb" + String(repeating: "D", count: 5)
        #expect(pattern == expected)
        #expect(tracker.stats.framesWithoutFace == 3)
        #expect(tracker.stats.bridgedFrames == 10)
        // Interpolated between the neighbours' boxes.
        let b11 = try #require(out[11].face?.observedBox), b10 = try #require(out[10].face?.observedBox)
        let b13 = try #require(out[13].face?.observedBox)
        #expect(abs(b11.centerX - (2 * b10.centerX + b13.centerX) / 3) < 1e-6)
    }
}
