// Training settings that name layers: which layers are frozen (model.freeze) and their
// learning-rate multipliers (optimizer.lr_mult).
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/alexnet.h"

namespace alexnet::train {

/// The layer that holds parameter `name`: the component before its last dot, in either
/// device layout ("conv1.bias" -> "conv1", "column1.fc8.weight" -> "fc8"); "" for a name
/// without a dot.
std::string layer_of_parameter(const std::string& name);

/// The names of `options`' layers (alexnet::layer_table), comma-separated, for messages.
std::string layer_list(const alexnet::AlexNetOptions& options);

/// Reads "model.freeze": a list of distinct layer names of the model `options` describe.
/// Throws std::invalid_argument naming the key and the bad value and listing the model's
/// layers; refuses a list of every layer (nothing would train).
std::vector<std::string> freeze_from_json(const nlohmann::json& value,
                                          const alexnet::AlexNetOptions& options);

/// Reads "optimizer.lr_mult": an object mapping layer names of the model `options` describe
/// to multipliers in [0, 1e6]. Throws std::invalid_argument naming the key and the bad name
/// or value (listing the model's layers).
std::map<std::string, double> lr_mult_from_json(const nlohmann::json& value,
                                                const alexnet::AlexNetOptions& options);

/// Keeps the parameters of `layers` from training, in either device layout: requires_grad
/// false, so backward computes no gradient for them (nor, below the lowest trained layer,
/// for the activations), and Sgd, which skips parameters without a gradient, applies no
/// weight decay and no momentum to them. Returns the number of parameters frozen. Throws
/// c10::Error naming a layer the model does not have.
int64_t freeze_layers(alexnet::AlexNet& model, const std::vector<std::string>& layers);

}  // namespace alexnet::train
