#!/usr/bin/env bash
# GRPO with the CodeScaler reward on verl 0.9.1, mirroring the reference recipe (iNeil77/CodeScaler,
# recipe/codescaler): Qwen3-8B-Base policy, CodeScaler-8B RM, n=8, batch 128, lr 1e-6, clip 0.2/0.28,
# token-mean loss, no KL, responses up to 16384 tokens, RM max_length 4096, DAPO dynamic sampling.
#
#   python examples/verl/prepare_data.py --problems train.jsonl --output data/train.parquet
#   python examples/verl/prepare_data.py --problems val.jsonl   --output data/val.parquet
#   codescaler serve --model LARK-Lab/CodeScaler-8B --max-length 4096 --port 5000 &   # on an RM GPU
#   REWARD_URL=http://rm-host:5000 bash examples/verl/run_grpo.sh
#
# Without REWARD_URL each reward worker loads the RM in-process (needs a GPU per reward worker, or a slow CPU).
# Differences from the reference: it ran its own recipe entry point and reward manager (async RM worker with
# CPU offload); here verl's stock main_ppo calls our compute_score_async, and `codescaler serve` batches the
# concurrent calls. The reference's ppo_mini_batch_size is not recorded; 128 = one update per rollout batch.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PLUGIN=$(cd "$HERE/../.." && pwd)/codescaler/integrations/verl.py
export PYTHONPATH="$(cd "$HERE/../.." && pwd):${PYTHONPATH:-}"
DATA=${DATA:-data}
POLICY=${POLICY:-Qwen/Qwen3-8B-Base}
RM=${RM:-LARK-Lab/CodeScaler-8B}
REWARD_URL=${REWARD_URL:-}
GPUS=${GPUS:-8}
NODES=${NODES:-1}

if [ -n "$REWARD_URL" ]; then RM_ARGS=(+reward.custom_reward_function.reward_kwargs.reward_url="$REWARD_URL")
else RM_ARGS=(+reward.custom_reward_function.reward_kwargs.model="$RM"); fi

python3 -m verl.trainer.main_ppo \
  algorithm.adv_estimator=grpo \
  algorithm.norm_adv_by_std_in_grpo=true \
  algorithm.use_kl_in_reward=false \
  algorithm.filter_groups.enable=true \
  algorithm.filter_groups.metric=reward \
  algorithm.filter_groups.max_num_gen_batches=10 \
  data.train_files="$DATA/train.parquet" \
  data.val_files="$DATA/val.parquet" \
  data.train_batch_size=128 \
  data.max_prompt_length=2048 \
  data.max_response_length=16384 \
  data.filter_overlong_prompts=true \
  actor_rollout_ref.model.path="$POLICY" \
  actor_rollout_ref.model.enable_gradient_checkpointing=true \
  actor_rollout_ref.actor.optim.lr=1e-6 \
  actor_rollout_ref.actor.ppo_mini_batch_size=128 \
  actor_rollout_ref.actor.use_dynamic_bsz=true \
  actor_rollout_ref.actor.ppo_max_token_len_per_gpu=24576 \
  actor_rollout_ref.actor.clip_ratio_low=0.2 \
  actor_rollout_ref.actor.clip_ratio_high=0.28 \
  actor_rollout_ref.actor.loss_agg_mode=token-mean \
  actor_rollout_ref.actor.use_kl_loss=false \
  actor_rollout_ref.actor.kl_loss_coef=0.0 \
  actor_rollout_ref.actor.entropy_coeff=0 \
  actor_rollout_ref.rollout.name=vllm \
  actor_rollout_ref.rollout.n=8 \
  actor_rollout_ref.rollout.temperature=1.0 \
  actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
  reward.custom_reward_function.path="$PLUGIN" \
  reward.custom_reward_function.name=compute_score_async \
  +reward.custom_reward_function.reward_kwargs.reward=rm \
  +reward.custom_reward_function.reward_kwargs.max_length=4096 \
  "${RM_ARGS[@]}" \
  trainer.n_gpus_per_node="$GPUS" \
  trainer.nnodes="$NODES" \
  trainer.total_epochs=1 \
  trainer.save_freq=20 \
  trainer.test_freq=20 \
  trainer.logger='["console"]' \
  trainer.project_name=codescaler \
  trainer.experiment_name=qwen3-8b-base-codescaler-8b \
  "$@"
