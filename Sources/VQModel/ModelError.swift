/// A failure of the model layer: a bad manifest, weights that do not fit it, a bad input.
package struct ModelError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    package enum Code: String, Sendable {
        /// The manifest is missing, unreadable or inconsistent.
        case badManifest
        /// The weights do not match the manifest (missing, extra or mis-shaped tensors).
        case weightMismatch
        /// The safetensors file is malformed or shorter than its header says.
        case badWeightFile
        /// A tensor uses a dtype other than F32, F16 or BF16.
        case unsupportedDType
        /// An input tensor is missing or has the wrong shape.
        case badInput
        /// Reading or writing a file failed.
        case io
        /// An unknown configuration name.
        case unknownConfig
    }

    package let code: Code
    /// A complete sentence naming what failed and why.
    package let message: String
    /// For ``Code/weightMismatch``: tensor names the manifest needs but the file lacks.
    package var missing: [String] = []
    /// For ``Code/weightMismatch``: tensor names in the file the manifest does not know.
    package var extra: [String] = []
    /// For ``Code/weightMismatch``: tensor names whose shape differs from the manifest.
    package var misshaped: [String] = []

    package init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    package var description: String { "\(code.rawValue): \(message)" }
}
