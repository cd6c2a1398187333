import Testing
@testable import DubfarmCore

@Suite("Video frames turned by quarter turns")
struct VideoFrameRotationTests {
    /// A w×h rgb24 frame whose pixel (x, y) is (x, y, 7).
    func rgb(_ w: Int, _ h: Int) -> VideoFrame {
        var p: [UInt8] = []
        for y in 0..<h { for x in 0..<w { p += [UInt8(x), UInt8(y), 7] } }
        return VideoFrame(width: w, height: h, layout: .rgb24, planes: [p], strides: [w * 3], index: 5)
    }
    func pixel(_ f: VideoFrame, _ x: Int, _ y: Int) -> [UInt8] {
        let i = y * f.strides[0] + x * 3
        return Array(f.planes[0][i..<i + 3])
    }

    @Test("90° counter-clockwise: the top row becomes the left column, read bottom-up")
    func quarterTurn() {
        let f = rgb(3, 2).rotated(by: 90)
        #expect(f.width == 2 && f.height == 3 && f.index == 5)
        // The source's top-right pixel (2, 0) ends top-left; its top-left (0, 0) bottom-left.
        #expect(pixel(f, 0, 0) == [2, 0, 7] && pixel(f, 0, 2) == [0, 0, 7] && pixel(f, 1, 0) == [2, 1, 7])
        let half = rgb(3, 2).rotated(by: 180)
        #expect(pixel(half, 0, 0) == [2, 1, 7] && pixel(half, 2, 1) == [0, 0, 7])
        let back = rgb(3, 2).rotated(by: 270)
        #expect(pixel(back, 0, 0) == [0, 1, 7] && pixel(back, 1, 2) == [2, 0, 7])
    }

    @Test("turning back restores the frame; four turns are none; 0 and 360 return it as it is", arguments: [90, 180, 270, -90])
    func inverse(degrees: Int) {
        let f = rgb(5, 3)
        #expect(f.rotated(by: degrees).rotated(by: -degrees).planes == f.planes)
        var g = f
        for _ in 0..<4 { g = g.rotated(by: degrees) }
        #expect(g.planes == f.planes && g.width == 5)
        #expect(f.rotated(by: 360).planes == f.planes && f.rotated(by: 0).strides == f.strides)
    }

    @Test("4:2:0 planes of an odd size turn with their rounded-up chroma")
    func yuv420() {
        let w = 5, h = 3, cw = 3, ch = 2
        let f = VideoFrame(width: w, height: h, layout: .yuv420p,
                           planes: [(0..<(w * h)).map(UInt8.init), (0..<(cw * ch)).map { UInt8(100 + $0) }, (0..<(cw * ch)).map { UInt8(200 + $0) }],
                           strides: [w, cw, cw], index: 0)
        let r = f.rotated(by: 90)
        #expect(r.width == 3 && r.height == 5 && r.strides == [3, 2, 2])
        #expect(r.planes[1].count == 6 && r.planes[1][0] == 102)   // chroma (2, 0) → top-left
        #expect(r.rotated(by: -90).planes == f.planes)
    }
}
