/// A dense float32 tensor: a shape and a pointer to row-major (C-order) values.
///
/// Layout convention of the engine: feature maps are `[C, H, W]` (NCHW with batch 1), so each
/// channel is a contiguous plane and a `[C, H·W]` matrix feeds sgemm without copies; token
/// sequences are `[N, D]` (token-major). A tensor either owns its memory (``Tensor/zeros(_:)``,
/// ``Tensor/init(shape:values:)``, ``copy()``) or is a view into a ``Workspace`` that is valid
/// until the workspace is reset.
package struct Tensor: @unchecked Sendable {
    /// Dimensions, outermost first.
    package let shape: [Int]
    /// First value.
    package let data: UnsafeMutablePointer<Float>
    let storage: TensorStorage?

    /// A view of memory owned elsewhere (a workspace, another tensor).
    package init(shape: [Int], viewing data: UnsafeMutablePointer<Float>) {
        self.shape = shape
        self.data = data
        self.storage = nil
    }

    init(shape: [Int], storage: TensorStorage) {
        self.shape = shape
        self.data = storage.pointer
        self.storage = storage
    }

    /// A new tensor that owns its memory, filled with zeros.
    package static func zeros(_ shape: [Int]) -> Tensor {
        let s = TensorStorage(count: shape.reduce(1, *))
        s.pointer.initialize(repeating: 0, count: s.count)
        return Tensor(shape: shape, storage: s)
    }

    /// A new owning tensor holding `values` (count must equal the shape's element count).
    package init(shape: [Int], values: [Float]) {
        precondition(values.count == shape.reduce(1, *), "tensor: \(values.count) values for shape \(shape)")
        let s = TensorStorage(count: values.count)
        values.withUnsafeBufferPointer { s.pointer.initialize(from: $0.baseAddress!, count: values.count) }
        self.init(shape: shape, storage: s)
    }

    /// Number of elements.
    package var count: Int { shape.reduce(1, *) }
    /// The values as a mutable buffer.
    package var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: data, count: count) }
    /// The values copied into an array.
    package var array: [Float] { Array(buffer) }

    /// An owning copy (survives workspace resets).
    package func copy() -> Tensor {
        let s = TensorStorage(count: count)
        s.pointer.initialize(from: data, count: count)
        return Tensor(shape: shape, storage: s)
    }

    /// The same values under another shape with equal element count (no copy).
    package func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "reshape \(shape) -> \(newShape)")
        var t = self
        t = Tensor(shape: newShape, data: data, storage: storage)
        return t
    }

    init(shape: [Int], data: UnsafeMutablePointer<Float>, storage: TensorStorage?) {
        self.shape = shape
        self.data = data
        self.storage = storage
    }

    /// Element at a flat index.
    package subscript(i: Int) -> Float {
        get { data[i] }
        nonmutating set { data[i] = newValue }
    }
}

/// Heap memory owned by one or more ``Tensor`` values, 64-byte aligned.
final class TensorStorage: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int
    init(count: Int) {
        self.count = count
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * 4, alignment: 64)
        self.pointer = raw.bindMemory(to: Float.self, capacity: max(1, count))
    }
    deinit { UnsafeMutableRawPointer(pointer).deallocate() }
}
