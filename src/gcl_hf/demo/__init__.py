"""The embedded offline demo (`gcl-hf demo`): a corpus of complementary pictures and captions, a tiny CLIP,
+CL vs +GCL fine-tuning from one pre-trained start over several seeds, and a pre-registered verdict."""
