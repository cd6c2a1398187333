import Foundation

/// One step of a frame pipeline on an OS thread of its own: inputs are handed to the step in
/// the order they were put in, and what it produces waits for the owner to take it.
///
/// The step's state is built on that thread by `make` and never leaves it, so it need not be
/// `Sendable` (FFmpeg codecs, a face tracker). The owner talks to the stage from one thread.
///
/// - Backpressure: at most `capacity` inputs wait; ``put(_:)`` blocks beyond that. Outputs are
///   not bounded here: an owner that takes them after each put holds no more than what
///   `capacity` inputs produce.
/// - Errors: an error thrown by the step (or by `make`) ends the thread; the owner's next
///   ``put(_:)``, ``takeAvailable()`` or ``finish()`` throws it.
/// - Ending: call ``finish()`` (all inputs processed, the step's `finish` run, its remaining
///   outputs returned) or ``cancel()`` (inputs dropped, the thread stopped); both wait for the
///   thread, so the step's state is released before they return. One of them must be called.
/// - `inline: true` runs the step synchronously inside ``put(_:)`` on the owner's thread: a
///   single-threaded budget runs the same code.
package final class OffThreadStage<Input: Sendable, Output: Sendable>: @unchecked Sendable {
    /// What a stage does with each input, and once at the end.
    package struct Step {
        package var process: (Input) throws -> [Output]
        package var finish: () throws -> [Output]
        package init(process: @escaping (Input) throws -> [Output], finish: @escaping () throws -> [Output] = { [] }) {
            self.process = process
            self.finish = finish
        }
    }

    /// Thrown by ``put(_:)`` after ``cancel()``.
    package struct Cancelled: Error {}

    package let name: String
    private let capacity: Int
    // Guarded by `condition`.
    private let condition = NSCondition()
    private var inputs: [Input] = []
    private var outputs: [Output] = []
    private var closed = false
    private var cancelled = false
    private var failure: (any Error)?
    private var running: Bool
    /// The step, when it runs on the owner's thread.
    private var inlineStep: Step?

    /// Starts a stage named `name` (the thread's name) whose step `make` builds.
    package init(name: String, capacity: Int = 2, inline: Bool = false, make: @escaping @Sendable () throws -> Step) throws {
        self.name = name
        self.capacity = max(1, capacity)
        if inline {
            inlineStep = try make()
            running = false
            return
        }
        running = true
        let thread = Thread { [self] in
            nameCurrentThread(name)
            run(make)
        }
        thread.name = name
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// Hands `input` to the step; blocks while `capacity` inputs are waiting.
    /// - Throws: the step's error, or ``Cancelled`` after ``cancel()``.
    package func put(_ input: Input) throws {
        if let step = inlineStep {
            let out = try step.process(input)
            outputs.append(contentsOf: out)
            return
        }
        condition.lock()
        defer { condition.unlock() }
        while inputs.count >= capacity && failure == nil && !cancelled { condition.wait() }
        if let failure { throw failure }
        if cancelled || closed { throw Cancelled() }
        inputs.append(input)
        condition.broadcast()
    }

    /// The outputs produced so far and not yet taken; never blocks.
    /// - Throws: the step's error.
    package func takeAvailable() throws -> [Output] {
        if inlineStep != nil { return drainOutputs() }
        condition.lock()
        defer { condition.unlock() }
        if let failure { throw failure }
        let out = outputs
        outputs.removeAll(keepingCapacity: true)
        return out
    }

    /// No more inputs: waits until the step has processed every input and run its `finish`, and
    /// returns the outputs not yet taken.
    /// - Throws: the step's error.
    package func finish() throws -> [Output] {
        if let step = inlineStep {
            inlineStep = nil
            outputs.append(contentsOf: try step.finish())
            return drainOutputs()
        }
        condition.lock()
        defer { condition.unlock() }
        closed = true
        condition.broadcast()
        while running { condition.wait() }
        if let failure { throw failure }
        if cancelled { throw Cancelled() }
        let out = outputs
        outputs.removeAll()
        return out
    }

    /// Drops the waiting inputs and stops the thread after the input in progress; waits for it.
    /// Harmless after ``finish()`` and when called twice.
    package func cancel() {
        inlineStep = nil
        condition.lock()
        defer { condition.unlock() }
        cancelled = true
        inputs.removeAll()
        condition.broadcast()
        while running { condition.wait() }
    }

    private func drainOutputs() -> [Output] {
        let out = outputs
        outputs.removeAll(keepingCapacity: true)
        return out
    }

    /// The thread: build the step, process inputs in order, finish, publish.
    private func run(_ make: () throws -> Step) {
        do {
            let step = try make()
            while let input = next() {
                let out = try step.process(input)
                publish(out)
            }
            if !isCancelled { publish(try step.finish()) }
        } catch {
            condition.lock()
            failure = error
            condition.unlock()
        }
        condition.lock()
        running = false
        condition.broadcast()
        condition.unlock()
    }

    /// The next input; nil once closed and empty, or cancelled.
    private func next() -> Input? {
        condition.lock()
        defer { condition.unlock() }
        while inputs.isEmpty && !closed && !cancelled { condition.wait() }
        if cancelled || inputs.isEmpty { return nil }
        let input = inputs.removeFirst()
        condition.broadcast()
        return input
    }

    private var isCancelled: Bool {
        condition.lock()
        defer { condition.unlock() }
        return cancelled
    }

    private func publish(_ out: [Output]) {
        guard !out.isEmpty else { return }
        condition.lock()
        outputs.append(contentsOf: out)
        condition.unlock()
    }
}
