// dino_attention: run a dino-export ONNX file on one image with OpenCV's DNN module.
//
//   dino_attention MODEL.onnx IMAGE [--mask MASK.png] [--mass 0.6]
//
// Prints the [CLS] embedding (one line, "cls D: v0 v1 ...") and writes the attention mask: the
// last block's [CLS] attention averaged over heads, keeping the patches that hold `mass` of it
// (0.6, as the official visualize_attention.py --threshold), scaled to the image, 0 or 255.
// The input size, layout (float NCHW or, with --preprocess, raw uint8 BGR) and normalisation
// come from the metadata that dino-export embeds in the file.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "layer_norm.hpp"
#include "onnx_metadata.hpp"

namespace {

struct Args {
  std::string model, image, mask = "attention_mask.png";
  double mass = 0.6;
};

Args parse_args(int argc, char** argv) {
  Args a;
  std::vector<std::string> rest;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    if (s == "--mask" && i + 1 < argc) a.mask = argv[++i];
    else if (s == "--mass" && i + 1 < argc) a.mass = std::atof(argv[++i]);
    else rest.push_back(s);
  }
  if (rest.size() != 2 || a.mass <= 0 || a.mass > 1)
    throw std::invalid_argument("usage: dino_attention MODEL.onnx IMAGE [--mask MASK.png] [--mass 0.6]");
  a.model = rest[0];
  a.image = rest[1];
  return a;
}

// Image (h, w, 3) uint8 BGR -> the graph's input blob: (1, H, W, 3) uint8 for --preprocess
// graphs, else (1, 3, H, W) float RGB with (x / 255 - mean) / std.
cv::Mat make_input(const cv::Mat& bgr, const dino::ModelInfo& m) {
  cv::Mat img = bgr;
  if (img.rows != m.height || img.cols != m.width) {
    bool shrink = img.rows > m.height || img.cols > m.width;
    cv::resize(bgr, img, cv::Size(m.width, m.height), 0, 0, shrink ? cv::INTER_AREA : cv::INTER_LINEAR);
  }
  if (m.uint8_input()) {
    int shape[] = {1, m.height, m.width, 3};
    return cv::Mat(4, shape, CV_8U, img.data).clone();
  }
  int shape[] = {1, 3, m.height, m.width};
  cv::Mat blob(4, shape, CV_32F);
  for (int c = 0; c < 3; ++c) {  // c is the RGB channel, 2 - c its BGR index
    float* dst = blob.ptr<float>(0, c);
    const float scale = float(1.0 / (255.0 * m.std[c])), offset = float(-m.mean[c] / m.std[c]);
    for (int y = 0; y < m.height; ++y)
      for (int x = 0; x < m.width; ++x)
        *dst++ = img.at<cv::Vec3b>(y, x)[2 - c] * scale + offset;
  }
  return blob;
}

// attn (1, heads, h, w) -> uint8 (h, w) mask, 255 where the head-mean holds `mass` of the total.
cv::Mat attention_mask(const cv::Mat& attn, double mass) {
  const int heads = attn.size[1], h = attn.size[2], w = attn.size[3], n = h * w;
  std::vector<double> mean(n, 0.0);
  const float* p = attn.ptr<float>();
  for (int k = 0; k < heads; ++k)
    for (int i = 0; i < n; ++i) mean[i] += p[k * n + i] / heads;
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return mean[a] < mean[b]; });
  const double total = std::accumulate(mean.begin(), mean.end(), 0.0);
  cv::Mat mask(h, w, CV_8U, cv::Scalar(0));
  double cum = 0;
  for (int i : order) {  // ascending: keep those after the first (1 - mass) of the mass
    cum += mean[i] / total;
    if (cum > 1.0 - mass) mask.at<uint8_t>(i / w, i % w) = 255;
  }
  return mask;
}

int run(const Args& args) {
  const dino::ModelInfo m = dino::ModelInfo::from_file(args.model);
  dino::register_missing_layers();
  cv::dnn::Net net = cv::dnn::readNetFromONNX(args.model);
  net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
  net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
#if CV_VERSION_MAJOR == 4 && CV_VERSION_MINOR < 8
  // OpenCV 4.6/4.7 fuse a MatMul with the constant Mul that follows it but drop the factor
  // (the last block's attention scale); without fusion every layer runs as exported.
  net.enableFusion(false);
#endif
  cv::Mat bgr = cv::imread(args.image, cv::IMREAD_COLOR);
  if (bgr.empty()) throw std::runtime_error(args.image + ": cannot read the image");
  net.setInput(make_input(bgr, m), m.input_name);
  std::vector<cv::Mat> outs;
  net.forward(outs, std::vector<cv::String>{"cls", "attn"});
  const cv::Mat& cls = outs[0];
  const cv::Mat& attn = outs[1];
  std::printf("model: %s/%d %dx%d, input %s (%s), OpenCV %s\n", m.arch.c_str(), m.patch_size,
              m.height, m.width, m.input_name.c_str(), m.input_format.c_str(), CV_VERSION);
  std::printf("cls %d:", int(cls.total()));
  for (size_t i = 0; i < cls.total(); ++i) std::printf(" %.9g", cls.ptr<float>()[i]);
  std::printf("\n");
  cv::Mat mask = attention_mask(attn, args.mass), full;
  cv::resize(mask, full, bgr.size(), 0, 0, cv::INTER_NEAREST);
  if (!cv::imwrite(args.mask, full)) throw std::runtime_error(args.mask + ": cannot write");
  std::printf("mask: %s (%d of %d patches hold %.0f%% of the head-mean attention)\n",
              args.mask.c_str(), cv::countNonZero(mask), int(mask.total()), 100 * args.mass);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  } catch (const std::exception& e) {  // cv::Exception included; keep it on one line
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    std::fprintf(stderr, "dino_attention: %s\n", msg.c_str());
    return 1;
  }
}
