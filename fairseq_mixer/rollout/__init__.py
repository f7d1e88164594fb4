"""The decoding machinery that the criteria share: drawing the model's own continuations
(`sampling`), the lean incremental steps of fairseq's LSTM and transformer decoders
(`lstm_step`, `transformer_step`), the teacher-forced pass over samples
(`decoder_features`, `packed_transformer_pass`, `positions`) and beam-1 decoding for
fairseq-generate and validation (`greedy_generator`)."""
