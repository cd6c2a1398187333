/// The worker's processing stage, seen from the segment renderer.
///
/// The renderer decodes a segment's frames (its context frames included) and feeds them in
/// presentation order; the processor hands back frames ready to encode, in order, possibly later
/// than it received them (a stage that smooths over time holds a few frames back). Frames it
/// returns that lie outside the segment's output range are dropped by the renderer. Memory stays
/// bounded: nothing holds a whole segment.
package protocol FrameProcessor: AnyObject {
    /// Takes the next decoded frame; returns the frames now ready, in order.
    func process(_ frame: VideoFrame) throws -> [VideoFrame]
    /// Called once after the last frame; returns every frame still held.
    func flush() throws -> [VideoFrame]
}

/// Returns every frame unchanged: the `passthrough` stage.
package final class PassthroughProcessor: FrameProcessor {
    package init() {}
    package func process(_ frame: VideoFrame) throws -> [VideoFrame] { [frame] }
    package func flush() throws -> [VideoFrame] { [] }
}
