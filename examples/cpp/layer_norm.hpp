// ONNX LayerNormalization (opset 17) as an OpenCV DNN custom layer, for OpenCV < 4.8, whose
// ONNX importer does not know the op (4.8 and later have it built in: this is not registered).
// Normalises over the last axis, which is what dino-export graphs use (axis = -1).
#pragma once

#include <cmath>
#include <opencv2/dnn.hpp>
#include <opencv2/dnn/layer.details.hpp>

namespace dino {

class LayerNormLayer : public cv::dnn::Layer {
 public:
  explicit LayerNormLayer(const cv::dnn::LayerParams& params) {
    setParamsFrom(params);
    epsilon_ = params.get<float>("epsilon", 1e-5f);
    if (params.get<int>("axis", -1) != -1)
      CV_Error(cv::Error::StsNotImplemented, "LayerNormalization: only axis = -1 is supported");
  }

  static cv::Ptr<cv::dnn::Layer> create(cv::dnn::LayerParams& params) {
    return cv::Ptr<cv::dnn::Layer>(new LayerNormLayer(params));
  }

  bool getMemoryShapes(const std::vector<cv::dnn::MatShape>& inputs, int,
                       std::vector<cv::dnn::MatShape>& outputs,
                       std::vector<cv::dnn::MatShape>&) const override {
    outputs.assign(1, inputs[0]);
    return false;
  }

  void forward(cv::InputArrayOfArrays inputs_arr, cv::OutputArrayOfArrays outputs_arr,
               cv::OutputArrayOfArrays) override {
    std::vector<cv::Mat> inputs, outputs;
    inputs_arr.getMatVector(inputs);
    outputs_arr.getMatVector(outputs);
    const cv::Mat& x = inputs[0];
    // scale and bias arrive as constant blobs or as extra inputs, depending on the importer
    const float* scale = weight(inputs, 0);
    const float* bias = weight(inputs, 1);
    const int d = x.size[x.dims - 1];
    const size_t rows = x.total() / d;
    const float* src = x.ptr<float>();
    float* dst = outputs[0].ptr<float>();
    for (size_t r = 0; r < rows; ++r, src += d, dst += d) {
      double mean = 0, var = 0;
      for (int i = 0; i < d; ++i) mean += src[i];
      mean /= d;
      for (int i = 0; i < d; ++i) var += (src[i] - mean) * (src[i] - mean);
      const float inv = 1.0f / std::sqrt(float(var / d) + epsilon_);
      for (int i = 0; i < d; ++i)
        dst[i] = float(src[i] - mean) * inv * (scale ? scale[i] : 1.0f) + (bias ? bias[i] : 0.0f);
    }
  }

 private:
  const float* weight(const std::vector<cv::Mat>& inputs, size_t k) const {
    if (blobs.size() > k) return blobs[k].ptr<float>();
    if (inputs.size() > k + 1) return inputs[k + 1].ptr<float>();
    return nullptr;
  }
  float epsilon_;
};

inline void register_missing_layers() {
#if CV_VERSION_MAJOR == 4 && CV_VERSION_MINOR < 8
  CV_DNN_REGISTER_LAYER_CLASS(LayerNormalization, LayerNormLayer);
#endif
}

}  // namespace dino
