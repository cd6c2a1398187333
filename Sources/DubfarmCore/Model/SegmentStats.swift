/// What a worker measured while processing a segment.
public struct SegmentStats: Codable, Sendable, Hashable {
    public var frames: Int
    public var framesWithFace: Int
    public var framesSwapped: Int
    public var decodeSeconds: Double
    public var stageSeconds: Double
    public var encodeSeconds: Double
    public var totalSeconds: Double
    /// Milliseconds per frame of each step of the stage, in pipeline order (nil for stages that
    /// report none, and in results from older workers).
    public var steps: [StepTiming]?

    public init(frames: Int = 0, framesWithFace: Int = 0, framesSwapped: Int = 0, decodeSeconds: Double = 0,
                stageSeconds: Double = 0, encodeSeconds: Double = 0, totalSeconds: Double = 0, steps: [StepTiming]? = nil) {
        self.frames = frames
        self.framesWithFace = framesWithFace
        self.framesSwapped = framesSwapped
        self.decodeSeconds = decodeSeconds
        self.stageSeconds = stageSeconds
        self.encodeSeconds = encodeSeconds
        self.totalSeconds = totalSeconds
        self.steps = steps
    }
}

/// One step of a stage (`detect`, `lipsync`, …) and its milliseconds per frame over a segment.
public struct StepTiming: Codable, Sendable, Hashable {
    public var step: String
    public var msPerFrame: Double
    public init(step: String, msPerFrame: Double) {
        self.step = step
        self.msPerFrame = msPerFrame
    }
}
