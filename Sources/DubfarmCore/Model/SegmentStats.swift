/// What a worker measured while processing a segment.
public struct SegmentStats: Codable, Sendable, Hashable {
    public var frames: Int
    public var framesWithFace: Int
    public var framesSwapped: Int
    public var decodeSeconds: Double
    public var stageSeconds: Double
    public var encodeSeconds: Double
    public var totalSeconds: Double

    public init(frames: Int = 0, framesWithFace: Int = 0, framesSwapped: Int = 0, decodeSeconds: Double = 0,
                stageSeconds: Double = 0, encodeSeconds: Double = 0, totalSeconds: Double = 0) {
        self.frames = frames
        self.framesWithFace = framesWithFace
        self.framesSwapped = framesSwapped
        self.decodeSeconds = decodeSeconds
        self.stageSeconds = stageSeconds
        self.encodeSeconds = encodeSeconds
        self.totalSeconds = totalSeconds
    }
}
