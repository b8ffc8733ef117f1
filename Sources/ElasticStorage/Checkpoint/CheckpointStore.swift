import ElasticNumerics

/// One layer as a checkpoint holds it: its `LayerState` (spec, optimizer step, weight, bias,
/// optimizer slots) and extra tensors that move with it (gradient-codec state such as
/// error-feedback residuals), restored as they were written, in order.
public struct LayerCheckpoint: Sendable, Equatable {
    public var index: Int
    public var state: LayerState
    public var extras: [NamedTensor]

    public init(index: Int, state: LayerState, extras: [NamedTensor] = []) {
        self.index = index
        self.state = state
        self.extras = extras
    }
}

/// A checkpoint root directory (docs/checkpoint-format.md): writers put their layers into
/// `.incoming-<step>` (`writeLayers`), the controller makes the step visible (`commit`), restore
/// picks the newest valid one (`newestValid`, `loadNewestValid`), retention removes old ones
/// (`prune`). A value: every call works on the file system directly, so a store in each worker
/// process and one in the controller can share the directory.
public struct CheckpointStore: Sendable, Equatable {
    public let root: String

    public init(root: String) { self.root = root }

    /// `root/step-<step>`.
    public func directory(step: Int) -> String { joinPath(root, CheckpointLayout.stepDirectoryName(step: step)) }

    /// `root/.incoming-<step>`.
    public func incomingDirectory(step: Int) -> String { joinPath(root, CheckpointLayout.incomingDirectoryName(step: step)) }

    var latestPath: String { joinPath(root, CheckpointLayout.latestName) }

    static func checkStep(_ step: Int) throws(CheckpointError) {
        guard step >= 0, step <= CheckpointLayout.maximumStep else {
            throw CheckpointError(.invalidArgument, "step \(step) is out of range 0…\(CheckpointLayout.maximumStep)")
        }
    }
}
