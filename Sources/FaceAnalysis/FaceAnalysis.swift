// FaceAnalysis: the face front end of the `dub` stage, on CPU, with no OpenCV or dlib code.
//
//   frame ──▶ FaceDetector (OpenCV Haar cascade XML, evaluated here)
//         ──▶ ShapePredictor (dlib 68-landmark model, read from dlib's serialization)
//         ──▶ FaceAlignment (FFHQ square from eyes and mouth; box-based without landmarks)
//         ──▶ FaceTracker (bridging of misses, centred smoothing, faceless frames counted)
//         ──▶ FaceWarp.crop (S×S crop) … model … FaceWarp.paste (inverse warp + feathered mask)
//
// Models: `HaarCascade.defaultPath` (package opencv-data) and `ShapePredictor.defaultPath`
// (package libdlib-data). Load them once per process with `FaceAnalyzer.load` and share the
// analyzer (a Sendable value) between trackers; the landmark model takes about 1.4 s to read.
//
// Pure logic throughout; the only I/O is reading the two model files.
