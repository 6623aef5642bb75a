// Fitting a label into a width, for the drawings of draw/; internal to the draw library.
#pragma once

#include <string>
#include <utility>

namespace alexnet::draw {

/// `text` in OpenCV's FONT_HERSHEY_SIMPLEX (the font of every drawing) at the largest scale
/// from `scale` down to `min_scale` (in steps of 0.02) at which it fits `width` pixels; cut
/// with ".." when even that is too wide. Returns the text and its scale.
std::pair<std::string, double> fit_text(std::string text, int width, double scale,
                                        double min_scale);

}  // namespace alexnet::draw
